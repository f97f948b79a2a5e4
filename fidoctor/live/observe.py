"""One look at a server's tree per tick: its JIT builds, their progress, lock waits, stalls.

A *build* is a ninja (or a compiler with no ninja above it) in the server's tree working on
a ``cached_ops/<module>`` dir (``fidoctor.flashinfer.builds.module_dir_of``). Its progress
is warmup's definition (``fidoctor.warmup.watch.TreeWatch``: CPU in the compiler tree, a
compiler starting or ending, a file in the module or generated dir changing); objects done
are the build's edges (``build.ninja``) whose output was written since it began. A build is
*stalled* only after ``stall_after`` seconds with none of that — a slow build is never
stalled, however long it runs.

A *lock wait* is the server's tree with no build of its own while another process holds
the flock of a module in the server's workspaces whose ``.so`` does not exist yet (the
only case FlashInfer waits on it), and a thread of the server sleeps in a poll loop
(filelock polls every 50 ms; it never shows in ``/proc/locks``). The holder's own tree is
then watched the same way; a holder idle for ``lock_idle_after`` seconds is a stall. Its own
ninja on the module is followed as a ``Build`` (``LockWait.build``: objects done, compilers,
CPU), so the lock-wait line — said one tick after the wait is seen, when that CPU is a rate —
shows the holder's progress. When a wait ends, the module is searched for orphaned compilers
(``fidoctor.live.orphans``: diagnose's judgement) at once and twice more 3 s apart while none
is found: a SIGKILLed holder's ninja/nvcc keep writing the module beside the server's build.

Idle cost: one walk of the server's tree (``proctree.tree_pids``) and, when nothing
builds, one read of ``/proc/locks``; builds add one TreeWatch sample each.

``State`` (plain data) carries what ``watch --once`` must remember between probe runs.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from fidoctor.flashinfer import eta
from fidoctor.flashinfer.builds import COMPILERS, module_dir_of
from fidoctor.flashinfer.layout import discover_workspaces
from fidoctor.flashinfer.modnames import parse_module_name, short_name
from fidoctor.fsutil import read_head
from fidoctor.procfs import parse_argv, parse_environ, read_proc, read_stat, start_epoch
from fidoctor.proclocks import parse_proc_locks
from fidoctor.proctree import SLEEP_WCHANS, read_comm, tree_pids
from fidoctor.proctree import describe_live as describe_proc
from fidoctor.warmup.watch import TreeWatch

WORKSPACE_EVERY_S = 10.0
ORPHAN_AGAIN_S = 3.0       # a second look at a freed module's orphans, if the first saw none
ORPHAN_LOOKS = 3
EDGE = re.compile(r"^build\s+(.+?):\s*(cuda_compile|compile)\s", re.M)
ARCH = re.compile(r"code=(sm_\d+[a-z]?)")
COMPILE_NAMES = ("nvcc", "cicc", "ptxas", "cudafe++", "cc1plus", "fatbinary", "nvlink")


@dataclass
class Build:
    module_dir: str
    name: str
    label: str            # short_name(): "batch_prefill (bf16, hd128, FA3)"
    backend: Optional[str]  # "FA2" | "FA3" | None (decode and others)
    arch: str             # the workspace's arch dir ("90a") or build.ninja's sm_XX list
    root: int             # ninja (or the topmost compiler)
    owner: int            # the server-side process that started it
    started: float        # epoch, ninja's create time
    outputs: List[str] = field(default_factory=list)
    done: int = 0
    estimate: Optional[eta.Estimate] = None
    last_progress: float = 0.0
    why: str = ""
    cpu_fraction: float = 0.0
    rss: int = 0
    compilers: int = 0
    stalled: bool = False
    watch: Optional[TreeWatch] = None
    finished: List[float] = field(default_factory=list)  # walls of this run's finished edges
    running: List[float] = field(default_factory=list)   # seconds each edge compiling has run
    jobs_seen: int = 0                                   # most edges ninja ran at once
    _log_sig: Tuple[int, int] = (0, 0)

    @property
    def edges(self) -> int:
        return len(self.outputs)

    def reestimate(self) -> Optional[eta.Reestimate]:
        """Time left from ninja's own progress (``eta.reestimate``), once an object is done."""
        return eta.reestimate(self.finished, self.running, self.edges, self.jobs_seen)

    def to_dict(self) -> Dict[str, Any]:
        return {"module": self.name, "label": self.label, "backend": self.backend,
                "arch": self.arch, "module_dir": self.module_dir, "pid": self.root,
                "owner_pid": self.owner, "edges": self.edges, "done": self.done,
                "cpu_percent": round(self.cpu_fraction * 100), "rss": self.rss,
                "compilers": self.compilers, "elapsed_s": round(time.time() - self.started, 1)}


@dataclass
class LockWait:
    lock_path: str
    module: str
    module_dir: str
    holder: int
    since: float
    last_progress: float
    stalled: bool = False
    watch: Optional[TreeWatch] = None
    build: Optional[Build] = None   # the holder's own build of the module, watched like ours
    announced: bool = False         # lock-wait said (one tick after it was seen: a CPU rate)
    looks: int = 0                  # orphan looks made after it ended

    def to_dict(self) -> Dict[str, Any]:
        return {"lock_path": self.lock_path, "module": self.module, "holder_pid": self.holder,
                "holder": describe_proc(self.holder),
                "waited_s": round(time.time() - self.since, 1),
                "holder_build": self.build.to_dict() if self.build else None}


@dataclass
class Change:
    """What one tick found: the session turns these into lines and events."""
    kind: str          # build-start | progress | build-end | lock-wait | lock-end | stall | resumed
    #                    | orphans
    build: Optional[Build] = None
    lock: Optional[LockWait] = None
    ok: bool = True    # build-end: a .so was written
    reason: str = ""
    found: List[Any] = field(default_factory=list)  # orphans: build-process-stuck findings


class Observer:
    """The live view of one server tree (``root``) and the workspaces its env points at."""

    def __init__(self, root: int, env: Mapping[str, str], stall_after: float = 30.0,
                 lock_idle_after: float = 8.0, history: Optional[eta.History] = None,
                 cores: Optional[int] = None) -> None:
        self.root = root
        self.env = dict(env)
        self.stall_after = stall_after
        self.lock_idle_after = lock_idle_after
        self.cores = cores or os.cpu_count() or 1
        self.history = history
        self.builds: Dict[str, Build] = {}
        self.lock: Optional[LockWait] = None
        self.failed: List[str] = []
        self._ws: List[Dict[str, Any]] = []
        self._ws_at = 0.0
        self._dir_of: Dict[Tuple[int, float], Optional[str]] = {}
        self._tree: List[int] = []
        self._orphan_looks: List[Tuple[float, LockWait]] = []   # (due, the ended wait)

    # ---- the server's side ------------------------------------------------------------
    @property
    def flashinfer_root(self) -> str:
        from fidoctor.flashinfer.layout import process_cache_root

        return process_cache_root(self.root, self.env)

    def workspaces(self, now: float) -> List[Dict[str, Any]]:
        if now - self._ws_at >= WORKSPACE_EVERY_S or not self._ws:
            self._ws = discover_workspaces(self.flashinfer_root)
            self._ws_at = now
        return self._ws

    def alive(self) -> bool:
        return os.path.exists(f"/proc/{self.root}")

    # ---- one tick -----------------------------------------------------------------------
    def tick(self, now: Optional[float] = None) -> List[Change]:
        now = now if now is not None else time.time()
        changes: List[Change] = []
        self._tree = tree_pids(self.root)
        roots = self._build_roots(self._tree)
        for mdir, (pid, owner) in roots.items():
            b = self.builds.get(mdir)
            if b is None or b.root != pid:
                b = self._new_build(mdir, pid, owner, now)
                self.builds[mdir] = b
                changes.append(Change("build-start", build=b))
        for mdir, b in list(self.builds.items()):
            if mdir not in roots:
                del self.builds[mdir]
                b.done = self._objects_done(b)
                ok = self._so_written(b)
                if not ok:
                    self.failed.append(b.name)
                changes.append(Change("build-end", build=b, ok=ok))
                continue
            changes += self._sample_build(b, now)
        changes += self._lock_tick(now, bool(roots))
        changes += self._orphan_tick(now)
        return changes

    def _build_roots(self, tree: List[int]) -> Dict[str, Tuple[int, int]]:
        """{module_dir: (topmost build pid, its parent)}: a build process whose parent is not
        on the same module (ninja under the server; ``sh -c nvcc`` and nvcc are below it)."""
        dirs: Dict[int, Optional[str]] = {}
        parent: Dict[int, int] = {}
        for pid in tree:
            if read_comm(pid) not in COMPILERS:
                continue
            st = _stat(pid)
            if st is None:
                continue
            key = (pid, st[1])
            if key not in self._dir_of:
                self._dir_of[key] = _module_dir(pid)
            dirs[pid], parent[pid] = self._dir_of[key], st[0]
        out: Dict[str, Tuple[int, int]] = {}
        for pid, mdir in dirs.items():
            if not mdir or dirs.get(parent[pid]) == mdir:
                continue
            if mdir not in out or pid < out[mdir][0]:
                out[mdir] = (pid, parent[pid])
        return out

    def _new_build(self, mdir: str, pid: int, owner: int, now: float) -> Build:
        name = os.path.basename(mdir)
        info = parse_module_name(name)
        backend = info.get("backend")
        ninja_text = _read_small(os.path.join(mdir, "build.ninja"))
        outputs = [m[0].strip() for m in EDGE.findall(ninja_text)]
        archs = sorted(set(ARCH.findall(ninja_text or "")))
        ws_arch = os.path.basename(os.path.dirname(os.path.dirname(mdir)))
        arch = ",".join(archs) or ws_arch
        st = _stat(pid)
        started = start_epoch(st[1]) if st else now
        est = eta.estimate(name, arch=ws_arch, cores=self.cores,
                           jobs=eta.jobs_for(_environ(pid) or self.env, self.cores),
                           history=self.history)
        gen = os.path.join(os.path.dirname(os.path.dirname(mdir)), "generated", name)
        lock = os.path.join(os.path.dirname(mdir), "tmp", name + ".lock")
        b = Build(mdir, name, short_name(name), backend.upper() if backend else None, arch,
                  pid, owner, started, outputs=outputs, estimate=est, last_progress=now,
                  watch=TreeWatch(pid, [mdir, gen], lock if os.path.exists(lock) else None))
        return b

    def _sample_build(self, b: Build, now: float) -> List[Change]:
        assert b.watch is not None
        s = b.watch.sample(now)
        b.cpu_fraction, b.rss = s.cpu_fraction, s.rss
        b.compilers = sum(1 for p in b.watch.last_procs if _name(p) == "nvcc") or \
            sum(1 for p in b.watch.last_procs if _name(p) in COMPILE_NAMES)
        b.done = self._objects_done(b)
        self._ninja_progress(b, now)
        out: List[Change] = []
        if s.progressed:
            b.last_progress, b.why = now, s.why
            if b.stalled:
                b.stalled = False
                out.append(Change("resumed", build=b, reason=s.why))
        elif not b.stalled and now - b.last_progress >= self.stall_after:
            b.stalled = True
            out.append(Change("stall", build=b,
                              reason=f"no CPU in its compiler tree and no new files for "
                                     f"{now - b.last_progress:.0f} s"))
        return out

    @staticmethod
    def _ninja_progress(b: Build, now: float) -> None:
        """The running ninja's own progress: its finished edges' walls (its ``.ninja_log``,
        re-read only when that changed) and how long each edge it runs now has run (its
        children's start times)."""
        assert b.watch is not None
        kids = []
        for p in b.watch.last_procs:
            try:
                if p.ppid() == b.root:
                    kids.append(max(0.0, now - p.create_time()))
            except Exception:  # noqa: BLE001 - a vanished process is not an edge any more
                continue
        if _name(next((p for p in b.watch.last_procs if p.pid == b.root), None)) != "ninja":
            return   # a compiler with no ninja above it: no edges to count
        b.running = kids
        b.jobs_seen = max(b.jobs_seen, len(kids))
        log = os.path.join(b.module_dir, ".ninja_log")
        try:
            st = os.stat(log)
            sig = (st.st_size, st.st_mtime_ns)
        except OSError:
            return
        if sig != b._log_sig:
            b._log_sig = sig
            b.finished = eta.finished_in_run(log, b.outputs, b.started)

    @staticmethod
    def _objects_done(b: Build) -> int:
        return sum(1 for o in b.outputs if _mtime(o) >= b.started - 1)

    def _so_written(self, b: Build) -> bool:
        return _mtime(os.path.join(b.module_dir, b.name + ".so")) >= b.started - 1

    # ---- lock waits ---------------------------------------------------------------------
    def _lock_tick(self, now: float, building: bool) -> List[Change]:
        held = None if building else self._foreign_lock(now)
        cur = self.lock
        if held is None:
            if cur is not None:
                self.lock = None
                self._orphan_looks.append((now, cur))
                return [Change("lock-end", lock=cur)] if cur.announced else []
            return []
        path, module, mdir, holder = held
        if cur is None or (cur.lock_path, cur.holder) != (path, holder):
            tree_dirs = [mdir, os.path.join(os.path.dirname(os.path.dirname(mdir)),
                                            "generated", module)]
            self.lock = LockWait(path, module, mdir, holder, now, now,
                                 watch=TreeWatch(holder, tree_dirs, None))
            self.lock.watch.sample(now)  # type: ignore[union-attr]
            self._holder_build(self.lock, now)
            if cur is not None:
                self._orphan_looks.append((now, cur))
            # lock-wait is said next tick, with the holder's build sampled twice (its CPU)
            return [Change("lock-end", lock=cur)] if cur and cur.announced else []
        assert cur.watch is not None
        s = cur.watch.sample(now)
        self._holder_build(cur, now)
        out: List[Change] = []
        if not cur.announced:
            cur.announced = True
            out.append(Change("lock-wait", lock=cur))
        if s.progressed:
            cur.last_progress = now
            if cur.stalled:
                cur.stalled = False
                out.append(Change("resumed", lock=cur, reason=s.why))
        elif not cur.stalled and now - cur.last_progress >= self.lock_idle_after:
            cur.stalled = True
            out.append(Change("stall", lock=cur, reason=f"the holder (pid {holder}) and its "
                              f"tree did nothing for {now - cur.last_progress:.0f} s"))
        return out

    def _holder_build(self, lk: LockWait, now: float) -> None:
        """The holder's ninja on the module waited for, as a ``Build`` (objects done of edges,
        compilers, CPU, RSS: the same figures as the server's own builds)."""
        pids = [p.pid for p in lk.watch.last_procs] if lk.watch else []
        want = os.path.normpath(lk.module_dir)
        root = next(((pid, owner) for mdir, (pid, owner) in self._build_roots(pids).items()
                     if os.path.normpath(mdir) == want), None)
        if root is None:
            lk.build = None
            return
        if lk.build is None or lk.build.root != root[0]:
            lk.build = self._new_build(lk.module_dir, root[0], root[1], now)
        self._sample_build(lk.build, now)   # its stall is the lock's (lock_idle_after)

    def _orphan_tick(self, now: float) -> List[Change]:
        """After a wait ends, look for orphaned trees on that module (``live.orphans``: the
        judgement of diagnose's build-process-stuck): at once, then ``ORPHAN_AGAIN_S`` later
        while nothing was found, at most ``ORPHAN_LOOKS`` times."""
        if not self._orphan_looks or self._orphan_looks[0][0] > now:
            return []
        _due, lk = self._orphan_looks.pop(0)
        from fidoctor.live.orphans import look

        found = look(self.flashinfer_root, [lk.module_dir])
        if found:
            return [Change("orphans", lock=lk, found=found)]
        lk.looks += 1
        if lk.looks < ORPHAN_LOOKS:
            self._orphan_looks.append((now + ORPHAN_AGAIN_S, lk))
        return []

    def _foreign_lock(self, now: float) -> Optional[Tuple[str, str, str, int]]:
        """(lock, module, module dir, holder) of a lock the server seems to wait for.

        Cheapest test first: one read of ``/proc/locks`` (nothing held by another process:
        done); then the workspaces' lock files by device and inode; then whether a thread of
        the server sleeps in a poll loop."""
        mine = set(self._tree)
        try:
            with open("/proc/locks") as f:
                entries = parse_proc_locks(f.read())
        except OSError:
            return None
        held = {(e["major"], e["minor"], e["ino"]): e["pid"] for e in entries
                if not e["blocked"] and e["pid"] not in mine}
        if not mine or not held:
            return None
        for ws in self.workspaces(now):
            tmp = os.path.join(str(ws["path"]), "cached_ops", "tmp")
            try:
                names = [n for n in os.listdir(tmp) if n.endswith(".lock")]
            except OSError:
                continue
            for n in names:
                try:
                    st = os.stat(os.path.join(tmp, n))
                except OSError:
                    continue
                holder = held.get((os.major(st.st_dev), os.minor(st.st_dev), st.st_ino))
                if holder is None:
                    continue
                module = n[: -len(".lock")]
                mdir = os.path.join(os.path.dirname(tmp), module)
                if os.path.exists(os.path.join(mdir, module + ".so")):
                    continue
                if self._polling(self._tree):
                    return os.path.join(tmp, n), module, mdir, holder
                return None
        return None

    def _polling(self, tree: List[int]) -> bool:
        """A thread of a Python in the tree parked in a sleep: filelock's poll loop.

        Where the kernel shows no wait channel at all (gVisor, some hardened kernels) this
        cannot be seen: then the foreign holder of a module without its ``.so`` decides."""
        readable = False
        for pid in tree[:32]:
            comm = read_comm(pid) or ""
            if comm in COMPILERS:
                continue
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for tid in tids[:256]:
                w = _task_wchan(pid, tid)
                # "poll_schedule_timeout.constprop.0": the kernel's suffix is not the name
                if w and w.split(".", 1)[0] in SLEEP_WCHANS:
                    return True
                readable = readable or w is not None
        return not readable

    # ---- state for watch --once ----------------------------------------------------------
    def export_state(self) -> Dict[str, Any]:
        return {"root": self.root, "root_start": (_stat(self.root) or (0, 0.0))[1],
                "builds": {m: {"started": b.started, "last_progress": b.last_progress,
                               "sig": _signature(b.watch)} for m, b in self.builds.items()},
                "lock": None if self.lock is None else {
                    "path": self.lock.lock_path, "holder": self.lock.holder,
                    "since": self.lock.since, "last_progress": self.lock.last_progress,
                    "sig": _signature(self.lock.watch)},
                "failed": self.failed[-20:]}

    def import_state(self, st: Mapping[str, Any]) -> None:
        """Carry progress times across probe runs: a signature that changed since the last run
        means progress happened in between."""
        if st.get("root") != self.root or st.get("root_start") != (_stat(self.root) or (0, 0))[1]:
            return
        self.failed = list(st.get("failed") or [])
        for m, b in self.builds.items():
            old = (st.get("builds") or {}).get(m)
            if old and abs(old.get("started", 0) - b.started) < 1:
                same = old.get("sig") == _signature(b.watch)
                b.last_progress = b.last_progress if not same else min(b.last_progress,
                                                                         old["last_progress"])
        old_lock = st.get("lock")
        if self.lock and old_lock and old_lock.get("holder") == self.lock.holder and \
                old_lock.get("path") == self.lock.lock_path:
            self.lock.since = min(self.lock.since, old_lock.get("since", self.lock.since))
            if old_lock.get("sig") == _signature(self.lock.watch):
                self.lock.last_progress = min(self.lock.last_progress, old_lock["last_progress"])


# ---- small readers (all bounded, none raises) -----------------------------------------------

def _stat(pid: int) -> Optional[Tuple[int, float]]:
    """(ppid, start time in clock ticks since boot), from ``procfs.read_stat``."""
    st = read_stat(pid)
    return (st["ppid"], float(st["starttime"])) if st else None


def _module_dir(pid: int) -> Optional[str]:
    raw = read_proc(pid, "cmdline", 32768)
    if raw is None:
        return None
    argv = parse_argv(raw)
    try:
        cwd: Optional[str] = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        cwd = None
    return module_dir_of(argv, cwd)


def _environ(pid: int) -> Optional[Dict[str, str]]:
    raw = read_proc(pid, "environ")
    return None if raw is None else parse_environ(raw)


def _task_wchan(pid: int, tid: str) -> Optional[str]:
    raw = read_proc(pid, f"task/{tid}/wchan", 4096)
    return (raw.decode("utf-8", "replace").strip() or None) if raw is not None else None


def _read_small(path: str, cap: int = 1 << 20) -> str:
    return (read_head(path, cap) or b"").decode("utf-8", "replace")


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def _name(p: Any) -> str:
    try:
        return str(p.name())
    except Exception:  # noqa: BLE001 - a vanished process has no name; skip it
        return ""


def _signature(w: Optional[TreeWatch]) -> List[float]:
    """CPU seconds of the tree and the newest file time: changed between runs → progress."""
    if w is None:
        return [0.0, 0.0]
    return [round(sum(w._cpu.values()), 2),
            round(max((sig[1] for sig in w._files.values()), default=0) / 1e9, 3)]
