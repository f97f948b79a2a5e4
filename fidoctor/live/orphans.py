"""Orphaned compilers of a module the server waited for: diagnose's judgement, live.

What: when the lock a server waited on comes free, look once (and again a few seconds
later if nothing was found) for build trees on that module whose Python is gone — the
killed holder's ninja/nvcc/cicc, re-parented and still writing the module dir while the
server now builds the same module beside them.
Why: on the H200 (tests/fixtures/real-h200/, issue 22 step 6) the waiter took the lock
0.57 s after the holder's SIGKILL and compiled the module while the holder's orphans did
too: twice the memory, and the orphans rewrote objects after the waiter's ninja had recorded
them (the next start recompiled). ``diagnose`` names them (``build-process-stuck``, the
"orphaned build … a restart compiles the same module beside it" warning); the watch said
nothing.
Fix: none here (the watch never kills); the line says what ``diagnose``/``fix`` would.

The judgement is diagnose's own, not a copy: the ``processes`` gatherer
(``fidoctor.snapshot.gather.processes``: the compiler table, parent/session facts,
``proctree.is_orphaned``), then the ``build-process-stuck`` probe over that one section;
its findings whose ``data["orphaned"]`` is true and whose module dir is the one waited for
are the answer. ``judge`` is the pure half (replayable on a stored snapshot).

Budget: the gather runs in a daemon thread joined for ``BUDGET_S`` (the gatherer's own);
past it the look counts as "found nothing" and the watch goes on.
"""

from __future__ import annotations

import os
import time
from types import SimpleNamespace
from typing import Iterable, List

from fidoctor.live.look import gather_within
from fidoctor.model import Finding
from fidoctor.snapshot import Snapshot

BUDGET_S = 6.0
WINDOW_S = 0.3      # CPU sampling window of the look (the gatherer's, shorter than diagnose's)


def judge(snap: Snapshot, module_dirs: Iterable[str]) -> List[Finding]:
    """``build-process-stuck`` findings of ``snap`` about orphaned trees on ``module_dirs``."""
    from fidoctor.probes import check_by_id

    want = {os.path.normpath(d) for d in module_dirs}
    return [f for f in check_by_id("build-process-stuck", snap)
            if f.data.get("orphaned") and os.path.normpath(f.data.get("module_dir") or "") in want]


def look(flashinfer_root: str, module_dirs: Iterable[str], window: float = WINDOW_S
         ) -> List[Finding]:
    """Gather the process table now (diagnose's gatherer) and ``judge`` it; [] past the budget
    or on any error of the gather."""
    from fidoctor.snapshot.gather import processes

    dirs = list(module_dirs)
    ctx = SimpleNamespace(flashinfer_root=flashinfer_root, sample_window_s=window)
    sections = gather_within(BUDGET_S, "fidoctor-orphans", ctx, (processes,))
    if sections is None:
        return []
    snap = Snapshot(context={"flashinfer_root": flashinfer_root}, sections=sections,
                    taken_at=time.time())
    return judge(snap, dirs)


def pids_of(f: Finding) -> List[int]:
    return [int(p) for p in f.data.get("pids") or []]
