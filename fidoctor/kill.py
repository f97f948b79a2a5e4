"""End a whole process tree — every descendant, every process of its session.

A group kill is not enough for FlashInfer builds: ninja puts every build edge
in a process group of its own (``setpgid``), so ``killpg`` of the interpreter
leaves nvcc → cicc running, and once their parent dies they are re-parented
to init and no longer descendants either. We therefore collect the tree two
ways and keep collecting while signalling:

* the descendants of the root (psutil, walked while the parent links exist);
* every process whose *session* is the root's session (ninja's edge groups
  stay in the session; only ``setsid`` leaves it, and those were caught as
  descendants first).

Sequence: SIGSTOP everything found (so nothing forks new edges while we
work), collect again until no new pid appears, SIGTERM + SIGCONT, wait a
grace period, SIGKILL what is left, reap our own children. What survives is
returned, so callers can say so instead of pretending.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Dict, Iterable, List, Optional, Set, Tuple

import psutil

Key = Tuple[int, float]  # (pid, create_time): a pid alone may be reused


def _session_members(sid: int) -> List[psutil.Process]:
    out = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid:
                out.append(p)
        except (OSError, psutil.Error):
            continue
    return out


def collect(root: int, sid: Optional[int] = None,
            extra: Iterable[int] = ()) -> Dict[Key, psutil.Process]:
    """The root, its descendants, and (when ``sid`` is given) its session's members."""
    found: Dict[Key, psutil.Process] = {}
    me = os.getpid()
    heads: List[psutil.Process] = []
    for pid in [root, *extra]:
        try:
            heads.append(psutil.Process(pid))
        except psutil.Error:
            continue
    for h in heads:
        try:
            procs = [h, *h.children(recursive=True)]
        except psutil.Error:
            procs = [h]
        for p in procs:
            _add(found, p, me)
    if sid is not None and sid > 1 and sid != os.getsid(0):
        for p in _session_members(sid):
            _add(found, p, me)
            try:
                for c in p.children(recursive=True):
                    _add(found, c, me)
            except psutil.Error:
                pass
    return found


def _add(found: Dict[Key, psutil.Process], p: psutil.Process, me: int) -> None:
    if p.pid in (me, 1):
        return
    try:
        found[(p.pid, p.create_time())] = p
    except psutil.Error:
        pass


def _signal(procs: Iterable[psutil.Process], sig: int) -> None:
    for p in procs:
        try:
            p.send_signal(sig)  # psutil checks the pid was not reused
        except psutil.Error:
            pass


def _alive(procs: Iterable[psutil.Process]) -> List[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            pass
    return out


def terminate_tree(root: int, sid: Optional[int] = None, grace: float = 3.0,
                   extra: Iterable[int] = (), follow_session: bool = True) -> List[int]:
    """Stop ``root`` and everything it started; return the pids that survived.

    ``sid`` defaults to the root's session when the root leads one (it was
    started with ``start_new_session``). ``extra`` adds more roots (e.g. a
    known ninja whose parent already died). ``follow_session=False`` for trees
    we did not start (an orphaned ninja of a killed server): its session may
    hold processes that are none of our business, e.g. the user's shell.
    """
    if not follow_session:
        sid = None
    elif sid is None:
        try:
            s = os.getsid(root)
            sid = s if s == root else None
        except OSError:
            sid = None
    extra = list(extra)
    procs: Dict[Key, psutil.Process] = {}
    for _ in range(5):  # freeze, re-collect until stable
        new = collect(root, sid, extra)
        fresh = [p for k, p in new.items() if k not in procs]
        if not fresh:
            break
        procs.update(new)
        _signal(fresh, signal.SIGSTOP)
    live = list(procs.values())
    _signal(live, signal.SIGTERM)
    _signal(live, signal.SIGCONT)
    _reap_own(live)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap_own(live)
        if not _alive(live) and not collect(root, sid, extra):
            break
        time.sleep(0.05)
    for _ in range(3):
        procs.update(collect(root, sid, extra))
        rest = _alive(procs.values())
        if not rest:
            break
        _signal(rest, signal.SIGKILL)
        _signal(rest, signal.SIGCONT)
        psutil.wait_procs(rest, timeout=2.0)
        _reap_own(rest)
    return sorted(p.pid for p in _alive(procs.values()))


def _reap_own(procs: Iterable[psutil.Process]) -> None:
    """Collect exit statuses of our own direct children so they don't linger as zombies."""
    me = os.getpid()
    for p in procs:
        try:
            if p.ppid() == me:
                os.waitpid(p.pid, os.WNOHANG)
        except (OSError, psutil.Error):
            pass


def pids_alive(pids: Iterable[int]) -> Set[int]:
    """Which of ``pids`` still exist as non-zombie processes."""
    out = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.add(pid)
        except psutil.Error:
            pass
    return out
