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
process at that exact point. It has no other use; never set it in production.
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
    time.sleep(float(os.environ.get("FIDOCTOR_TEST_PAUSE_S", "120")))


@dataclass
class Outcome:
    """What an apply, rollback or undo did, for the command to print."""

    txid: str
    done: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    left: List[str] = field(default_factory=list)  # steps that could not be judged or reverted


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
        if back.left:
            raise FidoctorError(
                f"fix {txid} stopped: {why}. Could not revert everything: "
                + "; ".join(back.left),
                f"run: fidoctor undo --id {txid}") from None
        n = len(back.done)
        raise FidoctorError(
            f"fix {txid} stopped: {why}. "
            + (f"Reverted the {n} change(s) already made; " if n else "")
            + "the box is as it was.", hint) from None


def _walk_back(j: Journal, out: Outcome, undoing: bool) -> None:
    """Revert, newest first, every step of ``j`` not yet reverted, judged by the disk's state.

    Rolling back an interrupted fix cleans up steps that never happened; undoing
    a committed one says so instead, and records irreversible steps as such.
    """
    intents = j.intents()
    reverted = set(j.reverted())
    for n in sorted(intents, reverse=True):
        if n in reverted:
            continue
        step = from_dict(intents[n])
        if undoing and not step.revertible:
            out.warnings.append(f"not reversible: {step.describe()}")
            j.append({"op": "reverted", "n": n, "state_found": "irreversible"})
            continue
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
        j.append({"op": "reverted", "n": n, "state_found": st})


def rollback(j: Journal) -> Outcome:
    """Revert an unfinished transaction from its journal and the disk's actual state."""
    out = Outcome(j.txid)
    _walk_back(j, out, undoing=False)
    if not out.left:
        j.append({"op": "rolled-back"})
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
        if j.status in ("undone", "rolled-back"):
            raise FidoctorError(f"fix {txid} is already {j.status}; nothing to undo")
    else:
        open_ = [j for j in js if j.status in ("committed", "interrupted")]
        if not open_:
            raise FidoctorError("nothing to undo: no applied or interrupted fix",
                                "see what was done with: fidoctor history")
        j = open_[-1]
    if j.status == "interrupted":
        return rollback(j)
    out = Outcome(j.txid)
    _walk_back(j, out, undoing=True)
    j.append({"op": "undone", "left": out.left})
    return out


def history(state: str) -> List[Journal]:
    return all_journals(os.path.join(state, "transactions"))


def interrupted(state: str) -> List[Journal]:
    return [j for j in history(state) if j.status == "interrupted"]


__all__ = ["Outcome", "StepError", "apply_steps", "rollback", "undo", "history",
           "interrupted", "PAUSE_POINTS"]
