"""What a build really cost, from the ``.ninja_log`` files it left, and how fast it could have been.

``.ninja_log`` (v5 and v7) has one tab-separated line per edge run:
``start_ms end_ms restat_mtime output command_hash``; times are relative to
that ninja's start. An edge rebuilt later appears again: the last line for an
output wins (ninja does the same). One edge is one compiler process with
``--threads=1`` (FlashInfer's default), so it is one core busy for its
duration: the sum of the edges is the CPU work, as measured on the H200
(h200-facts.md).

The lower bound of a build of these edges on ``cores`` cores is
``max(longest edge, total work / cores)``: no schedule beats either. The
``list_schedule`` gives what a longest-first pool of ``cores`` slots would
reach (what a perfect module-parallel warmup approaches). Both are used by
``bench/bench_warmup.py`` here and on the H200 machine (issue 22).
"""

from __future__ import annotations

import heapq
import os
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional


@dataclass(frozen=True)
class Edge:
    module: str      # the module dir's name
    output: str      # the edge's output path as logged
    seconds: float

    @property
    def is_link(self) -> bool:
        return self.output.endswith(".so")


def read_log(path: str, module: Optional[str] = None) -> List[Edge]:
    """The edges of one ``.ninja_log`` (the last run of each output); [] if unreadable."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read(1 << 24).splitlines()
    except OSError:
        return []
    name = module or os.path.basename(os.path.dirname(os.path.abspath(path)))
    last: Dict[str, Edge] = {}
    for ln in lines:
        if ln.startswith("#"):
            continue
        parts = ln.split("\t")
        if len(parts) < 4:
            continue
        try:
            start, end = int(parts[0]), int(parts[1])
        except ValueError:
            continue
        last[parts[3]] = Edge(name, parts[3], max(0, end - start) / 1000.0)
    return list(last.values())


def module_edges(module_dirs: Iterable[str]) -> List[Edge]:
    """Every edge of every module dir's own ``.ninja_log``."""
    out: List[Edge] = []
    for d in module_dirs:
        out += read_log(os.path.join(d, ".ninja_log"), os.path.basename(os.path.normpath(d)))
    return out


def list_schedule(edges: List[Edge], cores: int) -> float:
    """Wall time of the edges on ``cores`` slots, longest first, links after their module.

    Links are tiny (≈0.1 s) and are added after the module's last compile;
    that keeps the schedule honest without modelling the whole graph.
    """
    cores = max(1, cores)
    slots = [0.0] * cores
    done_at: Dict[str, float] = {}
    for e in sorted((e for e in edges if not e.is_link), key=lambda e: -e.seconds):
        t = heapq.heappop(slots)
        heapq.heappush(slots, t + e.seconds)
        done_at[e.module] = max(done_at.get(e.module, 0.0), t + e.seconds)
    end = max(slots)
    for e in edges:
        if e.is_link:
            end = max(end, done_at.get(e.module, 0.0) + e.seconds)
    return end


def bounds(edges: List[Edge], cores: int, overhead_s: float = 0.0) -> Dict[str, float]:
    """The figures a bench reports: work, longest edge, lower bound, list schedule.

    ``overhead_s`` (one torch + FlashInfer import, measured by the caller) is
    added to both the lower bound and the schedule.
    """
    work = sum(e.seconds for e in edges)
    longest = max((e.seconds for e in edges), default=0.0)
    return {
        "edges": float(len(edges)),
        "work_s": round(work, 1),
        "longest_edge_s": round(longest, 1),
        "cores": float(cores),
        "lower_bound_s": round(max(longest, work / max(cores, 1)) + overhead_s, 1),
        "list_schedule_s": round(list_schedule(edges, cores) + overhead_s, 1),
    }
