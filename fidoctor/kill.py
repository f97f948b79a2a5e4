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

Identity, not pids: a process is (pid, create time). Every member is keyed
so when it is first collected, and *every* signal goes through ``send``: it
opens a pidfd for the pid, checks that the process behind it still has the
recorded create time, and signals through the pidfd — so a pid that was
reused between plan, collection and signal (a build leaf exits, an unrelated
process gets its pid) is never signalled, not even in the gap between check
and kill. Roots can carry the create time the caller saw (``expect``, or a
``psutil.Process`` as the root); a root that no longer matches is skipped.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Dict, Iterable, List, Mapping, Optional, Set, Tuple, Union

import psutil

Key = Tuple[int, float]  # (pid, create_time): a pid alone may be reused
SAME_S = 0.005  # create times are exact (boot time + start ticks); allow float noise only


def create_time_of(pid: int) -> Optional[float]:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def same_process(pid: int, create_time: Optional[float]) -> bool:
    """True when ``pid`` is still the process that was created at ``create_time``."""
    if create_time is None:
        return False
    ct = create_time_of(pid)
    return ct is not None and abs(ct - float(create_time)) < SAME_S


def send(pid: int, create_time: Optional[float], sig: int) -> bool:
    """Signal (pid, create_time) only if that very process is still there; True if sent.

    The pidfd is opened first and the create time checked after: if the check
    passes, the process was alive under that pid throughout, so the pidfd is
    that process and nothing reused can receive the signal.
    """
    if pid <= 1 or pid == os.getpid():
        return False
    pidfd = -1
    if hasattr(os, "pidfd_open"):
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return False  # gone (ESRCH) or not ours to see
    try:
        if not same_process(pid, create_time):
            return False
        if pidfd >= 0:
            signal.pidfd_send_signal(pidfd, sig)
        else:  # kernels before 5.3: the check above is all we have
            os.kill(pid, sig)
        return True
    except OSError:
        return False
    finally:
        if pidfd >= 0:
            os.close(pidfd)


def _session_members(sid: int) -> List[psutil.Process]:
    out = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid:
                out.append(p)
        except (OSError, psutil.Error):
            continue
    return out


def collect(root: int, sid: Optional[int] = None, extra: Iterable[int] = (),
            expect: Optional[Mapping[int, float]] = None) -> Dict[Key, psutil.Process]:
    """The root, its descendants, and (when ``sid`` is given) its session's members.

    A head (root or extra) listed in ``expect`` is used only while its create
    time still matches: a reused pid is a different process, and so are its
    children.
    """
    found: Dict[Key, psutil.Process] = {}
    me = os.getpid()
    heads: List[psutil.Process] = []
    for pid in [root, *extra]:
        try:
            h = psutil.Process(pid)
            if expect and pid in expect and abs(h.create_time() - expect[pid]) >= SAME_S:
                continue
            heads.append(h)
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
            ct = p.create_time()  # cached by psutil: the identity seen at collection
        except psutil.Error:
            continue
        send(p.pid, ct, sig)


def _alive(procs: Iterable[psutil.Process]) -> List[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            pass
    return out


def terminate_tree(root: Union[int, psutil.Process], sid: Optional[int] = None,
                   grace: float = 3.0, extra: Iterable[int] = (), follow_session: bool = True,
                   expect: Optional[Mapping[int, float]] = None) -> List[int]:
    """Stop ``root`` and everything it started; return the pids that survived.

    ``sid`` defaults to the root's session when the root leads one (it was
    started with ``start_new_session``). ``extra`` adds more roots (e.g. a
    known ninja whose parent already died). ``follow_session=False`` for trees
    we did not start (an orphaned ninja of a killed server): its session may
    hold processes that are none of our business, e.g. the user's shell.
    ``expect`` maps root/extra pids to the create times the caller saw; a
    ``psutil.Process`` root carries its own. Heads that no longer match are
    skipped, and every member is re-checked right before each signal.
    """
    expect = dict(expect or {})
    if isinstance(root, psutil.Process):
        try:
            expect.setdefault(root.pid, root.create_time())
        except psutil.Error:
            return []
        root = root.pid
    root_gone = root in expect and not same_process(root, expect[root])
    if not follow_session:
        sid = None
    elif sid is None:
        try:
            s = os.getsid(root)
            sid = s if s == root else None
        except OSError:
            sid = None
    if root_gone:
        sid = None  # the session id belonged to a process that is gone
    extra = list(extra)
    procs: Dict[Key, psutil.Process] = {}
    for _ in range(5):  # freeze, re-collect until stable
        new = collect(root, sid, extra, expect)
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
        if not _alive(live) and not collect(root, sid, extra, expect):
            break
        time.sleep(0.05)
    for _ in range(3):
        procs.update(collect(root, sid, extra, expect))
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
