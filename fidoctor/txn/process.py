"""The one step that cannot be undone: terminating a stuck build tree.

It is journalled like the others (intent before, done after) so history and
recovery know it happened, but ``revert`` can only say so: a killed compiler
does not come back; the module is rebuilt on next use.

Right before acting it re-checks, on the live processes, what the plan
assumed: every pid still belongs to the process the snapshot saw (same
create time, so a reused pid is never signalled), and the tree is *still*
stuck — over a fresh sampling window it burns no CPU and starts no new
process. A build that moves is left alone, whatever the snapshot said.
A tree thrashing at its memory cgroup's limit burns CPU in reclaim, so
instead the cgroup is re-read (fidoctor.memcg.still_thrashing): at its
limit, hit thousands of times a second, no OOM kill — else nothing is signalled.
Termination itself is fidoctor.kill.terminate_tree (SIGSTOP the tree, TERM,
grace, KILL, re-collecting children as it goes).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List

import psutil

from fidoctor.kill import same_process
from fidoctor.txn.safety import StepError
from fidoctor.txn.steps import AFTER, BEFORE, TxContext, register_kind

CPU_LIMIT_S = 0.05  # tree CPU over the window above which it counts as progressing


@dataclass
class Terminate:
    pids: List[int]
    create_times: Dict[str, Any]
    pgids: List[int] = field(default_factory=list)
    module_dir: str = ""
    window_s: float = 1.0
    grace_s: float = 3.0
    orphans_only: bool = False  # asked to end an orphaned tree even though it still compiles
    thrash_dir: str = ""  # asked to end a tree thrashing at this memory cgroup's limit
    thrash_version: int = 0
    live: List[int] = field(default_factory=list)
    kind: str = "terminate"
    revertible: bool = False

    def describe(self) -> str:
        groups = f" (process groups {', '.join(map(str, self.pgids))})" if self.pgids else ""
        return (f"terminate build tree pids {' '.join(map(str, self.pids))}{groups}: "
                f"TERM, {self.grace_s:.0f} s grace, KILL — only if still stuck when re-checked")

    def _want(self, pid: int) -> Any:
        want = self.create_times.get(str(pid), self.create_times.get(pid))  # type: ignore
        try:
            return None if want is None else float(want)
        except (TypeError, ValueError):
            return None

    def _same(self, pid: int) -> bool:
        """Still the process the plan saw (same create time); no recorded time: not ours."""
        return same_process(pid, self._want(pid))

    def _tree(self) -> Dict[int, psutil.Process]:
        out: Dict[int, psutil.Process] = {}
        for pid in self.live:
            try:
                if not self._same(pid):
                    continue  # exited, and the pid may be someone else's now
                p = psutil.Process(pid)
                out[pid] = p
                for c in p.children(recursive=True):
                    out[c.pid] = c
            except psutil.Error:
                continue
        return out

    def preflight(self, tx: Any = None) -> None:
        self.live = [p for p in self.pids if self._same(p)]
        if not self.live:
            return  # already gone: apply has nothing to do
        if os.getpid() in self.live:
            raise StepError("refusing to terminate fidoctor itself")
        theirs = _not_ours_to_signal(self.live)
        if theirs:
            raise StepError(f"{theirs}; fidoctor (uid {os.geteuid()}) cannot signal them, "
                            "nothing was signalled",
                            "run the fix as that user (or root), or ask them to end the build")
        for pid in self.live:
            other = _other_namespace(pid, self.module_dir)
            if other:
                raise StepError(f"{other}; nothing was signalled",
                                "end it from inside its container if it really is stuck")
        if self.orphans_only:
            owner = _python_ancestor(self.live)
            if owner is not None:
                raise StepError(
                    f"the build tree of {self.module_dir or 'pids ' + str(self.pids)} is not "
                    f"orphaned any more: pid {owner} (a Python) is its ancestor; nothing was "
                    "signalled", "re-run fidoctor diagnose")
            return
        if self.thrash_dir:
            from fidoctor.memcg import still_thrashing

            ok, how = still_thrashing(self.thrash_dir, self.thrash_version, self.window_s)
            if not ok:
                raise StepError(
                    f"the build tree of {self.module_dir or 'pids ' + str(self.pids)} is not "
                    f"thrashing any more ({self.thrash_dir}: {how}); nothing was signalled",
                    "re-run fidoctor diagnose")
            return
        t0 = self._tree()
        cpu0 = _cpu(t0.values())
        time.sleep(self.window_s)
        t1 = self._tree()
        new = sorted(set(t1) - set(t0))
        delta = _cpu(p for pid, p in t1.items() if pid in t0) - cpu0
        if new or delta > CPU_LIMIT_S:
            why = f"started pid(s) {new}" if new else f"used {delta:.2f} s CPU"
            raise StepError(
                f"the build tree of {self.module_dir or 'pids ' + str(self.pids)} is progressing "
                f"now (it {why} in {self.window_s:.1f} s); fidoctor never stops a progressing "
                "build, nothing was signalled", "wait for it, or re-run fidoctor fix later")

    def apply(self, tx: TxContext) -> Dict[str, Any]:
        if not self.live:
            return {"note": "already gone"}
        from fidoctor.kill import terminate_tree

        # A group counts only while its leader is a verified tree member: once the
        # leader is gone its id may be reused by a group that is none of our business.
        groups = [g for g in self.pgids if g in self.live]
        extra = set(self.live[1:]) | _group_members(groups)
        expect = {pid: self._want(pid) for pid in self.live if self._want(pid) is not None}
        survivors = terminate_tree(self.live[0], grace=self.grace_s, extra=sorted(extra),
                                   follow_session=False, expect=expect)
        if survivors:
            raise StepError(f"pids {survivors} survived SIGKILL (uninterruptible I/O?)",
                            "look at them with: ps -o pid,stat,wchan -p "
                            + ",".join(map(str, survivors)))
        return {"terminated": self.live}

    def state(self) -> str:
        return BEFORE if any(self._same(p) for p in self.live) else AFTER

    def explain_unknown(self) -> str:
        return "unknown process state"

    def revert(self, tx: TxContext) -> List[str]:
        return [f"cannot bring back terminated processes {self.live}; the module is rebuilt "
                "on next use"]

    def cleanup(self) -> None:
        pass


def _not_ours_to_signal(pids: List[int]) -> str:
    """'pid N (uid U), …' for the processes this user may not signal ('' when it may all).

    Signal 0 asks the kernel's permission check and delivers nothing; without it the tree
    was signalled in vain and then reported as having 'survived SIGKILL (uninterruptible
    I/O?)'."""
    out = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except PermissionError:
            try:
                uid: Any = psutil.Process(pid).uids().real
            except psutil.Error:
                uid = "?"
            out.append(f"pid {pid} (uid {uid})")
        except OSError:
            continue  # gone: nothing to signal
    return ("the build tree belongs to another user: " + ", ".join(out)) if out else ""


def _other_namespace(pid: int, module_dir: str) -> str:
    """Why ``pid`` builds something that is not this cache ('' when it is ours).

    A process in another mount namespace (a container) may name the very same path as our
    module dir while it works on another directory (its own cache, or a copy bind-mounted
    there): argv and cwd strings cannot tell. The dir as that process sees it
    (``/proc/PID/root`` + path) must be the same inode as ours, else it is not our build.
    """
    try:
        if os.stat(f"/proc/{pid}/ns/mnt").st_ino == os.stat("/proc/self/ns/mnt").st_ino:
            return ""
    except OSError:
        return ""  # gone, or not ours to inspect (then the signal is refused anyway)
    where = module_dir or "the module dir"
    try:
        theirs = os.stat(f"/proc/{pid}/root/{module_dir.lstrip('/')}") if module_dir else None
        ours = os.stat(module_dir) if module_dir else None
        if theirs and ours and (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino):
            return ""
    except OSError:
        pass
    return (f"pid {pid} runs in another mount namespace (a container?) where {where} is not "
            "this machine's directory: it builds someone else's cache")


def _python_ancestor(pids: List[int]) -> Any:
    """The pid of a live Python that owns any of ``pids``, or None.

    Owner = a Python ancestor in the build's own session (FlashInfer and torch
    start ninja in their session); a subreaper in another session (systemd, a
    container init, a test runner) that adopted the orphans owns nothing —
    the same rule as fidoctor.proctree.is_orphaned.
    """
    for pid in pids:
        try:
            sid = os.getsid(pid)
            for parent in psutil.Process(pid).parents():
                if parent.pid != 1 and parent.name().startswith("python") \
                        and os.getsid(parent.pid) == sid:
                    return parent.pid
        except (psutil.Error, OSError):
            continue
    return None


def _cpu(procs: Any) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system + getattr(t, "children_user", 0.0) + \
                getattr(t, "children_system", 0.0)
        except psutil.Error:
            continue
    return total


def _group_members(pgids: List[int]) -> set:
    """Every live process in ``pgids`` (groups the probe saw holding only tree members)."""
    want = {g for g in pgids if g > 1}
    out: set = set()
    if not want:
        return out
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) in want:
                out.add(p.pid)
        except (OSError, psutil.Error):
            continue
    out.discard(os.getpid())
    return out


register_kind(Terminate)
