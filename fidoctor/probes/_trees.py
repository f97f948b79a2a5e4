"""Compiler trees of a snapshot, summarised once for every probe that judges builds.

build-process-stuck, build-lock-held, build-memory-pressure and
jit-log-unfinished all ask "which build trees are there and are they
moving?"; they import the answer from here, never from each other.
"""

from __future__ import annotations

from typing import Any, Dict, List

from fidoctor.proctree import build_trees, cpu_delta, progressing, stopped
from fidoctor.snapshot import Snapshot


def tree_summary(snap: Snapshot, tree: Dict[str, Any]) -> Dict[str, Any]:
    """Facts about one tree that several probes share."""
    procs: List[Dict[str, Any]] = tree["procs"]
    live = [p for p in procs if not p.get("exited")]
    busiest = max(live or procs, key=lambda p: p.get("rss_end") or p.get("rss") or 0)
    oldest = min((p.get("create_time") or snap.taken_at) for p in procs)
    return {
        "pids": [p["pid"] for p in procs],
        "stopped": stopped(live),
        "progressing": progressing(procs),
        "orphaned": any(r.get("orphaned") for r in tree.get("roots") or [tree["root"]]),
        "cpu_delta": cpu_delta(procs),
        "rss": sum(p.get("rss_end") or p.get("rss") or 0 for p in live),
        "busiest": busiest,
        "age": snap.taken_at - oldest,
    }


def stuck_trees(snap: Snapshot, target_only: bool = True) -> List[Dict[str, Any]]:
    """Compiler trees of the snapshot with their summary (``tree`` + ``sum``).

    Only trees building into the target's cache unless ``target_only`` is
    false: other users' and other workspaces' builds are not this diagnosis's.
    """
    procs = snap.data("processes").get("processes", [])
    return [{"tree": t, "sum": tree_summary(snap, t)} for t in build_trees(procs)
            if not target_only or t["root"].get("in_target", True)]
