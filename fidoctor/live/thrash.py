"""A build thrashing at its memory limit, said while it happens: diagnose's judgement, live.

What: while the server builds, each tick reads its memory cgroup's counters once
(``fidoctor.memcg.counters``) and compares them with the last tick's (``memcg.thrashes``:
usage at the limit, the limit hit ``memcg.THRASH_HITS_PER_S`` times a second, no OOM kill).
When that holds, the build is judged the way ``diagnose --pid`` judges it: the ``oom`` and
``processes`` gatherers (diagnose's own), then the ``build-memory-thrash`` probe over those
two sections (its thresholds: compilers' major faults, anon share, v2 PSI). Its findings
become one ``memory-thrash`` event per build.
Why: a build whose compilers' code is reclaimed and refaulted at the cgroup's limit burns
CPU in the kernel and makes next to no progress, with no OOM kill and no error: the watch's
stall rule (no CPU, no new file) never fires, and the start goes silent for minutes
(docs/findings/build-memory-thrash.md).
Fix: none here (the watch never kills); the event carries the finding's fixes.

Cost: nothing while no build runs or the cgroup has no limit; one reading of 4–5 small
cgroup files per tick while one does. The judgement (≈1 s: the gatherers' sampling windows)
runs only on a tick that saw the cgroup thrash, at most every ``LOOK_AGAIN_S`` while it finds
nothing, in a daemon thread joined for ``BUDGET_S``: past it the look found nothing.
"""

from __future__ import annotations

import os
import time
from types import SimpleNamespace
from typing import Any, Dict, List, Mapping, Optional

from fidoctor import memcg
from fidoctor.live.look import gather_within
from fidoctor.model import Finding
from fidoctor.snapshot import Snapshot

BUDGET_S = 6.0
WINDOW_S = 0.5       # the processes gatherer's sampling window (diagnose's default)
LOOK_AGAIN_S = 10.0  # after a look that found no thrashing build


class ThrashWatch:
    """The memory cgroup of one server (``root``), watched while it builds."""

    def __init__(self, root: int, flashinfer_root: str, env: Mapping[str, str]) -> None:
        self.root, self.flashinfer_root, self.env = root, flashinfer_root, dict(env)
        self.dir: Optional[str] = None
        self.version: Optional[int] = None
        self.resolved = False
        self.prev: Optional[Dict[str, Any]] = None
        self.said: Dict[str, Finding] = {}    # module dir -> the finding said for its build
        self.next_look = 0.0

    def _resolve(self) -> bool:
        """The server's memory cgroup dir, read once (the oom gatherer's reading of it)."""
        if not self.resolved:
            from fidoctor.snapshot.gather.oom import cgroup_facts

            self.resolved = True
            cg = cgroup_facts(self.root)
            if cg.get("dir") and cg.get("limit"):
                self.dir, self.version = cg["dir"], cg["version"]
        return self.dir is not None

    def tick(self, now: float, building: Mapping[str, Any]) -> List[Finding]:
        """``build-memory-thrash`` findings not said before, while ``building`` (the
        observer's builds) is not empty; [] on most ticks."""
        if not building:
            self.prev = None
            return []
        if not self._resolve():
            return []
        assert self.dir is not None and self.version is not None
        cur = memcg.counters(self.dir, self.version)
        prev, self.prev = self.prev, cur
        if prev is None or now < self.next_look:
            return []
        if not memcg.thrashes(prev, cur, self.version)[0]:
            return []
        found = [f for f in self.look() if _key(f.data.get("module_dir")) not in self.said]
        if not found:
            self.next_look = now + LOOK_AGAIN_S
        for f in found:
            self.said[_key(f.data.get("module_dir"))] = f
        return found

    def forget(self, module_dir: str) -> None:
        """The build ended: a new build of the module is judged afresh."""
        self.said.pop(_key(module_dir), None)

    def look(self) -> List[Finding]:
        """Gather ``oom`` and ``processes`` now (diagnose's gatherers) and run the probe; []
        past ``BUDGET_S`` or on any error of the gather."""
        from fidoctor.snapshot.gather import oom, processes

        ctx = SimpleNamespace(pid=self.root, flashinfer_root=self.flashinfer_root,
                              sample_window_s=WINDOW_S)
        sections = gather_within(BUDGET_S, "fidoctor-thrash", ctx, (oom, processes))
        if sections is None:
            return []
        return judge(Snapshot(
            context={"pid": self.root, "flashinfer_root": self.flashinfer_root,
                     "env": self.env},
            sections=sections, taken_at=time.time()))


def _key(module_dir: Optional[str]) -> str:
    return os.path.normpath(module_dir or "")


def judge(snap: Snapshot) -> List[Finding]:
    """The ``build-memory-thrash`` probe over ``snap`` (the pure half, replayable)."""
    from fidoctor.probes import check_by_id

    return check_by_id("build-memory-thrash", snap)
