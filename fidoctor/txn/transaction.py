"""Apply a list of steps as one transaction; undo it; recover one that was killed.

Order of every step: preflight (refuse early, change nothing) → journal
``intent`` (fsynced) → the change → journal ``done``. After the last step the
journal gets ``commit``. A failure or Ctrl-C reverts what was done, newest
first. A SIGKILL cannot be caught, so recovery never trusts the journal alone:
for each step with an intent it asks the disk (``step.state()``) whether the
change happened, and reverts only what did.

Test-only hook: ``FIDOCTOR_TEST_PAUSE_AT=after-journal|after-step|before-commit``
makes the fix touch ``<state_dir>/test-paused-<point>`` and sleep there
(``FIDOCTOR_TEST_PAUSE_S``, default 120 s) so a test can SIGKILL a real fix
process at that exact point, or change the world there (reuse a pid, swap a
directory for a symlink) and let the fix go on by deleting the marker file.
It has no other use; never set it in production.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from fidoctor.errors import FidoctorError
from fidoctor.txn.journal import Journal, all_journals, new_txid
from fidoctor.txn.safety import StepError
from fidoctor.txn.steps import AFTER, BEFORE, TxContext, from_dict, to_dict

PAUSE_POINTS = ("after-journal", "after-step", "before-commit")


def pause_hook(point: str, state: str) -> None:
    """Test-only: stop at ``point`` when FIDOCTOR_TEST_PAUSE_AT asks for it (see module doc)."""
    if os.environ.get("FIDOCTOR_TEST_PAUSE_AT") != point:
        return
    marker = os.path.join(state, f"test-paused-{point}")
    with open(marker, "w") as f:
        f.write(str(os.getpid()))
    deadline = time.monotonic() + float(os.environ.get("FIDOCTOR_TEST_PAUSE_S", "120"))
    while time.monotonic() < deadline and os.path.exists(marker):
        time.sleep(0.05)


@dataclass
class Outcome:
    """What an apply, rollback or undo did, for the command to print."""

    txid: str
    done: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    left: List[str] = field(default_factory=list)  # steps that could not be judged or reverted
    journal_error: str = ""  # the journal could not be updated (disk full?): undo must run again
    retry: bool = False  # a step failed (bad backup, full disk): the fix stays open for undo


def _ctx(j: Journal, n: int) -> TxContext:
    return TxContext(j.txid, j.backups, j.removed, n)


def apply_steps(state: str, steps: Sequence[Any], header: Dict[str, Any],
                txid: Optional[str] = None) -> Outcome:
    """Run ``steps`` under a new journal; on any failure revert and raise FidoctorError."""
    txid = txid or new_txid()
    header = dict(header, steps=[s.describe() for s in steps])
    try:
        j = Journal.create(os.path.join(state, "transactions"), txid, header)
    except OSError as e:
        raise FidoctorError(f"cannot write the journal under {state}: {e.strerror}; "
                            "nothing was changed",
                            "free some space or set XDG_STATE_HOME to a writable disk") from None
    out = Outcome(txid)
    try:
        for n, step in enumerate(steps):
            tx = _ctx(j, n)
            step.preflight(tx)
            j.append({"op": "intent", "n": n, "step": to_dict(step)})
            pause_hook("after-journal", state)
            extra = step.apply(tx)
            pause_hook("after-step", state)
            j.append(dict(extra, op="done", n=n))
            out.done.append(step.describe())
        pause_hook("before-commit", state)
        j.append({"op": "commit"})
        return out
    except (FidoctorError, OSError, KeyboardInterrupt) as e:
        why = ("interrupted (Ctrl-C)" if isinstance(e, KeyboardInterrupt)
               else getattr(e, "message", None) or str(e))
        hint = getattr(e, "hint", "")
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # finish reverting first
        try:
            back = rollback(j)
        finally:
            signal.signal(signal.SIGINT, old)
        if back.left or back.journal_error:
            where = "; ".join(back.done + back.left) or "nothing was changed"
            note = (f" The journal could not record the rollback ({back.journal_error})."
                    if back.journal_error else "")
            raise FidoctorError(
                f"fix {txid} stopped: {why}. Could not finish reverting: {where}.{note}",
                f"free some space if the disk is full, then run: fidoctor undo --id {txid} "
                "(it finishes the job from the journal and the disk)") from None
        n = len(back.done)
        raise FidoctorError(
            f"fix {txid} stopped: {why}. "
            + (f"Reverted the {n} change(s) already made; " if n else "")
            + "the box is as it was.", hint) from None


def _record(j: Journal, rec: Dict[str, Any], out: Outcome) -> None:
    """Append to the journal; a full disk must not stop a rollback half-way.

    What was reverted is on disk whatever the journal says (``state()`` asks
    the disk), so a failed append is remembered and reported instead.
    """
    try:
        j.append(rec)
    except OSError as e:
        out.journal_error = out.journal_error or (e.strerror or str(e))


def _walk_back(j: Journal, out: Outcome, undoing: bool) -> None:
    """Revert, newest first, every step of ``j`` not yet reverted, judged by the disk's state.

    Rolling back an interrupted fix cleans up steps that never happened; undoing
    a committed one says so instead, and records irreversible steps as such.
    A step that cannot be read or reverted (bad backup, full disk, a journal
    line from a newer fidoctor) is listed in ``out.left`` with where things
    are; the walk goes on with the others.
    """
    out.warnings += j.warnings
    intents = j.intents()
    reverted = set(j.reverted())
    for n in sorted(intents, reverse=True):
        if n in reverted:
            continue
        try:
            step = from_dict(intents[n], out.warnings)
            _check_own(step, j, n)
        except StepError as e:
            out.left.append(f"step {n}: {e.message}")
            out.retry = True
            continue
        if undoing and not step.revertible:
            out.warnings.append(f"not reversible: {step.describe()}")
            _record(j, {"op": "reverted", "n": n, "state_found": "irreversible"}, out)
            continue
        try:
            st = step.state()
            if st == AFTER:
                out.warnings += step.revert(_ctx(j, n))
                out.done.append("reverted: " + step.describe())
            elif st == BEFORE:
                if undoing:
                    out.warnings.append(f"already as before: {step.describe()}")
                else:
                    step.cleanup()
            else:
                out.left.append(step.explain_unknown())
                if not undoing:
                    continue  # an interrupted fix stays open until it can be settled
        except (StepError, OSError) as e:
            why = e.message if isinstance(e, StepError) else (e.strerror or str(e))
            out.left.append(f"not reverted: {step.describe()} ({why})")
            out.retry = True
            continue
        _record(j, {"op": "reverted", "n": n, "state_found": st}, out)


def _check_own(step: Any, j: Journal, n: int) -> None:
    """Refuse a journal step that points outside what this fix itself made.

    A journal is a file on disk and may have been edited (by hand, or by whoever can write
    the state dir): a ``put-file`` whose backup is not in this fix's own ``backups/`` dir
    (``/etc/passwd``, another fix's copy), a ``move-aside`` whose moved copy is not in this
    fix's quarantine (``<workspace>/fidoctor-quarantine/<txid>/``), a ``move-in`` or
    ``staging`` outside this fix's ``fidoctor-import/<txid>/`` would make undo copy, move or
    remove something fidoctor never put there. Such a step is left alone (StepError).
    """
    from fidoctor.paths import QUARANTINE

    def refuse(what: str) -> StepError:
        return StepError(f"journal step {n} ({step.kind}) {what}; fidoctor did not make it, so "
                         f"undo will not touch it (was {j.path} edited?)")

    def under(path: str, *parts: str) -> bool:
        want = os.path.normpath(os.path.join(step.root, *parts))
        return os.path.normpath(path).startswith(want + os.sep)

    kind = getattr(step, "kind", "")
    if kind == "put-file" and step.old_sha is not None:
        if os.path.realpath(os.path.dirname(os.path.normpath(step.backup) or ".")) != \
                os.path.realpath(j.backups):
            raise refuse(f"names a backup outside {j.backups} ({step.backup})")
    elif kind == "move-aside":
        dst = os.path.normpath(step.dst)
        q = os.path.dirname(os.path.dirname(dst))
        if os.path.basename(os.path.dirname(dst)) != j.txid or \
                os.path.basename(q) != QUARANTINE or not under(dst, ""):
            raise refuse(f"moves back from {step.dst}, which is not in this fix's quarantine "
                         f"(…/{QUARANTINE}/{j.txid}/ inside {step.root})")
    elif kind == "move-in" and not under(step.src, "fidoctor-import", j.txid):
        raise refuse(f"takes {step.dst} out to {step.src}, which is not this import's "
                     "staging dir")
    elif kind == "staging" and os.path.normpath(step.path) != os.path.normpath(
            os.path.join(step.root, "fidoctor-import", j.txid)):
        raise refuse(f"would remove {step.path}, which is not this import's staging dir")


def rollback(j: Journal) -> Outcome:
    """Revert an unfinished transaction from its journal and the disk's actual state."""
    out = Outcome(j.txid)
    _walk_back(j, out, undoing=False)
    if not out.left:
        _record(j, {"op": "rolled-back"}, out)
    return out


def undo(state: str, txid: Optional[str] = None) -> Outcome:
    """Revert the last fix (or ``txid``): roll back an interrupted one, undo a committed one."""
    root = os.path.join(state, "transactions")
    js = all_journals(root)
    if txid:
        match = [j for j in js if j.txid == txid]
        if not match:
            raise FidoctorError(f"no fix with id {txid}", "list them with: fidoctor history")
        j = match[0]
        if j.status == "damaged":
            raise FidoctorError(
                f"the journal of fix {txid} is damaged: no record of it could be read "
                f"({'; '.join(j.warnings[:2]) or 'empty'}), so fidoctor cannot tell what to put "
                "back", f"its copies of what it changed are in {j.backups} and {j.removed}: "
                "compare and restore them by hand")
        if j.status in ("undone", "rolled-back"):
            raise FidoctorError(f"fix {txid} is already {j.status}; nothing to undo")
    else:
        open_ = [j for j in js if j.status in ("committed", "interrupted")]
        if not open_:
            raise FidoctorError("nothing to undo: no applied or interrupted fix",
                                "see what was done with: fidoctor history")
        j = open_[-1]
    if j.status == "interrupted":
        out = rollback(j)
        if out.left and not out.retry and not out.journal_error:
            # What is left cannot be settled by fidoctor (the module was rebuilt beside the
            # moved copy, or both are gone): every step was judged and nothing overwritten.
            # Left open, the fix stayed 'interrupted' for good and every later fix and
            # --clear-incomplete refused to start ("recover it first with fidoctor undo").
            _record(j, {"op": "rolled-back", "left": out.left}, out)
    else:
        out = Outcome(j.txid)
        _walk_back(j, out, undoing=True)
        if not out.retry:
            _record(j, {"op": "undone", "left": out.left}, out)
    if out.journal_error:
        out.left.append(f"the journal of fix {j.txid} could not record this "
                        f"({out.journal_error}); what is listed above is on disk — run "
                        f"fidoctor undo --id {j.txid} again once space is freed to finish")
    return out


def history(state: str) -> List[Journal]:
    return all_journals(os.path.join(state, "transactions"))


def interrupted(state: str) -> List[Journal]:
    return [j for j in history(state) if j.status == "interrupted"]


__all__ = ["Outcome", "StepError", "apply_steps", "rollback", "undo", "history",
           "interrupted", "PAUSE_POINTS"]
