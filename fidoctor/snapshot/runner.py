"""Run gatherers in parallel, each in a forked child with its own deadline.

Why fork and not threads (sos's lesson): a thread stuck in ``read()`` on a
FIFO or in ``stat()`` on a dead NFS mount cannot be interrupted, a child can
be killed or, if it sits in uninterruptible sleep, simply abandoned. The child
sends its result through a pipe; the parent never blocks on it for longer than
the gatherer's budget.

Why marshal and not JSON on that pipe: the child is a fork of this very
interpreter, so the bytes never meet another Python, and a 10,000-module box
sends tens of MB (cache, elf, locks, jitlog): ``json.dumps`` in the child plus
``json.loads`` here cost ≈ 1 s of CPU there, marshal ≈ 0.2 s
(bench/bench_big.py). Gatherers return JSON-shaped data (dicts with str keys,
lists, str, numbers, bool, None: what a saved snapshot replays as); with
``FIDOCTOR_CHECK_WIRE=1`` (set for the whole test suite by tests/conftest.py)
the parent checks that each result survives a JSON round trip unchanged, so
live and replayed snapshots judge the same.

Gatherers may depend on other sections (``REQUIRES``); a gatherer starts as
soon as everything it requires has finished, whatever its status.
"""

from __future__ import annotations

import errno
import gc
import marshal
import os
import select
import signal
import time
import traceback
from typing import Callable, Dict, List, Optional

from fidoctor import selfprocs
from fidoctor.snapshot import Section, Snapshot
from fidoctor.snapshot.context import GatherContext
from fidoctor.snapshot.gather import Gatherer, all_gatherers

GLOBAL_BUDGET_S = 45.0


def _status_for(exc: BaseException) -> str:
    if isinstance(exc, PermissionError):
        return "denied"
    if isinstance(exc, FileNotFoundError):
        return "absent"
    return "error"


def run_inline(g: Gatherer, ctx: GatherContext, done: Dict[str, Section]) -> Section:
    """Run one gatherer in this process (tests, debugging); errors become facts."""
    t0 = time.monotonic()
    try:
        data = g.gather(ctx, done)
        return Section("ok", data, elapsed_s=round(time.monotonic() - t0, 4))
    except Exception as e:  # noqa: BLE001 - a gatherer's failure is a fact
        return Section(
            _status_for(e), error=f"{type(e).__name__}: {e}",
            elapsed_s=round(time.monotonic() - t0, 4),
        )


class _Child:
    def __init__(self, g: Gatherer, pid: int, fd: int, started: float) -> None:
        self.g, self.pid, self.fd, self.started = g, pid, fd, started
        self.buf = bytearray()


def _detach_stdio() -> None:
    """Give a gatherer child /dev/null for stdin, stdout and (unless FIDOCTOR_DEBUG) stderr.

    A child stuck for good on a dead mount (D state in FUSE's or NFS's
    ``request_wait_answer``: SIGKILL cannot end it) would otherwise hold the
    caller's pipes open: ``$(fidoctor diagnose …)``, Go's ``cmd.Output()`` (the
    node-problem-detector) or ``subprocess.run(capture_output=True)`` then wait
    for it after fidoctor itself has exited.
    """
    try:
        null = os.open(os.devnull, os.O_RDWR)
    except OSError:
        return
    for fd in (0, 1) if os.environ.get("FIDOCTOR_DEBUG") else (0, 1, 2):
        try:
            os.dup2(null, fd)
        except OSError:
            pass
    os.close(null)


F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ (Python 3.10+), spelled out for 3.9


def _widen_pipe(fd: int, size: int) -> None:
    """Grow the pipe to 1 MiB for a big result: 16× fewer wake-ups than 64 KiB chunks."""
    if size <= 1 << 16:
        return
    try:
        import fcntl

        fcntl.fcntl(fd, F_SETPIPE_SZ, 1 << 20)
    except OSError:
        pass  # over /proc/sys/fs/pipe-max-size for this user: the default size works too


def _fork(g: Gatherer, ctx: GatherContext, done: Dict[str, Section]) -> _Child:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            # No cyclic GC in a short-lived child: a collection walks every object it
            # inherited (a 10,000-module cache section is a million), and each one it
            # touches copies a page the parent shares with it.
            gc.disable()
            os.close(r)
            os.setpgid(0, 0)  # so a timeout can kill what the gatherer spawned
            _detach_stdio()
            section = run_inline(g, ctx, done)
            try:
                payload = marshal.dumps((section.status, section.data, section.error))
            except ValueError as e:  # a set, bytes or object: a gatherer bug, said as a fact
                payload = marshal.dumps(("error", {}, f"gatherer returned data that is not "
                                         f"plain JSON-shaped data ({e}); a fidoctor bug"))
            _widen_pipe(w, len(payload))
            view = memoryview(payload)
            while view:
                n = os.write(w, view)
                view = view[n:]
        except BaseException:  # noqa: BLE001
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    return _Child(g, pid, r, time.monotonic())


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _kill_child(child: _Child) -> None:
    """SIGKILL a gatherer child, its group, and what it started in sessions of its own.

    ``proc.run`` starts tools (nvcc, nvidia-smi, the target python) in a new
    session so *it* can kill them on timeout; when the gatherer itself dies
    first, those would outlive it (a wedged nvcc that ignores SIGTERM loops
    forever), so the descendants are collected before anything is killed.
    """
    import psutil

    try:
        below = psutil.Process(child.pid).children(recursive=True)
    except psutil.Error:
        below = []
    for target in (-child.pid, child.pid):
        try:
            os.kill(target, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for p in below:
        try:
            p.kill()
        except psutil.Error:
            pass


def _finish(child: _Child, timed_out: bool) -> Section:
    elapsed = round(time.monotonic() - child.started, 4)
    if timed_out:
        _kill_child(child)
        os.close(child.fd)
        _reap(child.pid)  # a child in D state stays; never block on it
        why = (f"gave up after {child.g.budget_s:g} s" if elapsed >= child.g.budget_s else
               f"gave up after {elapsed:.1f} s: the whole gather's budget ran out")
        return Section("timeout", error=why, elapsed_s=elapsed)
    os.close(child.fd)
    try:
        os.waitpid(child.pid, 0)
    except ChildProcessError:
        pass
    try:
        status, data, error = marshal.loads(child.buf)
        if isinstance(data, dict) and isinstance(error, str):
            if os.environ.get("FIDOCTOR_CHECK_WIRE") == "1":
                _check_json_shaped(child.g.name, data)
            return Section(status, data, error, elapsed)
    except (EOFError, ValueError, TypeError):
        pass
    return Section("error", error="gatherer crashed before reporting", elapsed_s=elapsed)


def _check_json_shaped(name: str, data: Dict) -> None:
    """Raise when a JSON round trip would change ``data`` (a tuple, an int key, a set…):
    then a live snapshot and its saved, replayed copy would not judge the same."""
    import json

    try:
        same = json.loads(json.dumps(data)) == data
    except (TypeError, ValueError) as e:
        raise AssertionError(f"gatherer {name!r} returned data JSON cannot hold: {e}") from None
    if not same:
        raise AssertionError(f"gatherer {name!r} returned data that a JSON round trip changes "
                             "(a tuple, a non-str key or a NaN): return JSON-shaped data")


def gather_snapshot(
    ctx: GatherContext,
    only: Optional[List[str]] = None,
    inline: bool = False,
    gatherers: Optional[List[Gatherer]] = None,
    budget_s: Optional[float] = None,
    meanwhile: Optional[Callable[[], object]] = None,
) -> Snapshot:
    """Gather every registered section (or ``only`` these) into a Snapshot; ``budget_s``
    (default GLOBAL_BUDGET_S) caps the whole run, whatever each gatherer's own budget.
    ``meanwhile`` runs once here while the first children work (diagnose imports its
    probes then: 30–50 ms that would otherwise come after the gather)."""
    taken_at = time.time()
    selfprocs.note_runner()
    registry = list(gatherers) if gatherers is not None else all_gatherers()
    pending = [g for g in registry if only is None or g.name in only]
    done: Dict[str, Section] = {}
    if inline or os.environ.get("FIDOCTOR_INLINE_GATHER") == "1":
        for g in _ordered(pending):
            done[g.name] = run_inline(g, ctx, done)
        return Snapshot(context=ctx.to_dict(), sections=done, taken_at=taken_at)

    running: Dict[int, _Child] = {}
    deadline = time.monotonic() + (GLOBAL_BUDGET_S if budget_s is None else budget_s)
    # Decoding sections allocates a million objects on a big box; each full collection
    # in the middle walks all that came before (≈ 0.3 s of CPU). Nothing here makes
    # cycles worth collecting; the collector is back on when the gather returns.
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        while pending or running:
            for g in list(pending):
                if all(r in done or r not in _names(pending, running) for r in g.requires):
                    pending.remove(g)
                    child = _fork(g, ctx, done)
                    running[child.fd] = child
            if not running:  # unmet requirements that will never run
                for g in pending:
                    done[g.name] = Section("skipped", error="required sections missing")
                break
            if meanwhile is not None:
                meanwhile()
                meanwhile = None
            now = time.monotonic()
            wait = min(c.started + c.g.budget_s for c in running.values()) - now
            wait = max(0.0, min(wait, deadline - now))
            try:
                ready, _, _ = select.select(list(running), [], [], wait)
            except InterruptedError:
                continue
            for fd in ready:
                child = running[fd]
                try:
                    chunk = os.read(fd, 1 << 20)
                except OSError as e:
                    if e.errno == errno.EINTR:
                        continue
                    chunk = b""
                if chunk:
                    child.buf += chunk
                else:
                    done[child.g.name] = _finish(running.pop(fd), timed_out=False)
            now = time.monotonic()
            for fd, child in list(running.items()):
                if now >= child.started + child.g.budget_s or now >= deadline:
                    done[child.g.name] = _finish(running.pop(fd), timed_out=True)
    except BaseException:  # Ctrl-C (KeyboardInterrupt), SystemExit: leave no child behind
        for child in running.values():
            _kill_child(child)
            os.close(child.fd)
            _reap(child.pid)
        raise
    finally:
        if gc_was_on:
            gc.enable()
    ordered = {g.name: done[g.name] for g in registry if g.name in done}
    return Snapshot(context=ctx.to_dict(), sections=ordered, taken_at=taken_at)


def _names(pending: List[Gatherer], running: Dict[int, _Child]) -> set:
    return {g.name for g in pending} | {c.g.name for c in running.values()}


def _ordered(gs: List[Gatherer]) -> List[Gatherer]:
    """Topological order by REQUIRES (ties by registry order)."""
    out: List[Gatherer] = []
    names = {g.name for g in gs}
    remaining = list(gs)
    while remaining:
        for g in remaining:
            if all(r not in names or r in {o.name for o in out} for r in g.requires):
                out.append(g)
                remaining.remove(g)
                break
        else:
            out.extend(remaining)
            break
    return out
