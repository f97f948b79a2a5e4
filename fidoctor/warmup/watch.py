"""Watch one module's build: is anything in the compiler tree making progress?

Progress is any of: CPU used by the tree (the child interpreter, ninja, nvcc,
cicc, ptxas, and — when another process holds the module's lock — that
holder and its tree, because then *its* compile is what we wait for); a
process appearing or finishing; a file in the module's build or generated
dir appearing or changing. Only when none of these happens for
``stall_after`` seconds is the build stalled.

CPU below ``BUSY_FRACTION`` of a core counts as idle: filelock polls its lock
20 times a second (≈0.1 % of a core) and must not look like work.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import psutil

from fidoctor.proclocks import lock_holders

BUSY_FRACTION = 0.03
Key = Tuple[int, float]


@dataclass
class Sample:
    cpu_fraction: float      # cores busy since the last sample (tree total)
    rss: int                 # bytes, tree total
    procs: int
    progressed: bool
    why: str                 # what counted as progress ("" when none)


@dataclass
class TreeWatch:
    root: int
    dirs: List[str]
    lock_path: Optional[str] = None
    _cpu: Dict[Key, float] = field(default_factory=dict)
    _files: Dict[str, Tuple[int, int]] = field(default_factory=dict)
    _last: float = 0.0
    foreign_holder: Optional[int] = None
    last_procs: List[psutil.Process] = field(default_factory=list)

    def tree(self) -> List[psutil.Process]:
        """Our child and its descendants, plus a foreign lock holder's tree (one /proc walk)."""
        out: Dict[int, psutil.Process] = {}
        self._add_tree(self.root, out)
        self.foreign_holder = None
        if self.lock_path:
            others = [h for h in lock_holders(self.lock_path) if h not in out]
            if others:
                self.foreign_holder = others[0]
                for h in others:
                    self._add_tree(h, out)
        self.last_procs = list(out.values())
        return self.last_procs

    @staticmethod
    def _add_tree(pid: int, out: Dict[int, psutil.Process]) -> None:
        try:
            p = psutil.Process(pid)
            out[p.pid] = p
            for c in p.children(recursive=True):
                out[c.pid] = c
        except psutil.Error:
            pass

    def sample(self, now: float) -> Sample:
        cpu: Dict[Key, float] = {}
        rss = 0
        procs = self.tree()
        for p in procs:
            try:
                with p.oneshot():
                    t = p.cpu_times()
                    cpu[(p.pid, p.create_time())] = t.user + t.system
                    rss += p.memory_info().rss
            except psutil.Error:
                continue
        dt = max(now - self._last, 1e-3) if self._last else 0.0
        used = sum(v - self._cpu.get(k, 0.0) for k, v in cpu.items() if k in self._cpu)
        born = [k for k in cpu if k not in self._cpu]
        died = [k for k in self._cpu if k not in cpu]
        files = self._scan()
        changed = [f for f, sig in files.items() if self._files.get(f) != sig]
        first = not self._last
        self._cpu, self._files, self._last = cpu, files, now
        frac = used / dt if dt else 0.0
        why = ""
        if first:
            why = "started"
        elif frac >= BUSY_FRACTION:
            why = f"cpu {frac * 100:.0f}%"
        elif born or died:
            why = f"processes {len(born)} new, {len(died)} done"
        elif changed:
            why = f"file {os.path.basename(changed[0])}"
        return Sample(frac, rss, len(procs), bool(why), why)

    def _scan(self) -> Dict[str, Tuple[int, int]]:
        out: Dict[str, Tuple[int, int]] = {}
        for d in self.dirs:
            try:
                with os.scandir(d) as it:
                    for e in it:
                        try:
                            st = e.stat(follow_symlinks=False)
                        except OSError:
                            continue
                        out[e.path] = (st.st_size, st.st_mtime_ns)
            except OSError:
                continue
        return out


def blocked_leaf(procs: List[psutil.Process], root: int) -> Optional[int]:
    """The process the stall is most likely stuck in: a leaf, preferring compilers."""
    pids = {p.pid for p in procs}
    leaves = []
    for p in procs:
        try:
            kids = [c.pid for c in p.children() if c.pid in pids]
            if not kids:
                leaves.append((p.name() in ("python", "python3") or p.pid == root, -p.pid, p.pid))
        except psutil.Error:
            continue
    return sorted(leaves)[0][2] if leaves else None
