"""build-memory-pressure: a live build will run more compile jobs than memory holds.

What: for each FlashInfer build running now, the jobs ninja will run at once
(its ``-j``, set from ``MAX_JOBS``; without it ninja's default: nproc + 2, or
2/3 on 1/2 CPUs) times the per-job peak (the one table,
``flashinfer/jobmem.py``: 0.5 GB for a decode module, 1 GB for FA2, 3.1 GB
for an FA3/sm90 one; the largest compiler RSS seen in the tree raises it)
exceeds the memory available plus what the build already uses.
Why: host RAM, not GPU memory, runs out: the OOM killer takes cicc/ptxas and
ninja fails with ``subcommand failed`` / code 137 (FlashInfer#3634), and the
kill can leave a half-built module or a stale lock behind.
Fix: ``set-max-jobs`` (data: ``max_jobs``): export ``MAX_JOBS=<n>`` for the
server, n = 80 % of (available + in use) / per-job peak, at least 1; it
takes effect on the next build. Safe and reversible.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional

from fidoctor.flashinfer.jobmem import job_peak_bytes
from fidoctor.model import Finding, Fix
from fidoctor.probes._trees import stuck_trees
from fidoctor.proctree import fmt_rss
from fidoctor.snapshot import Snapshot

ID = "build-memory-pressure"
REQUIRES = ("processes", "host")
HEADROOM = 0.8


def ninja_default_jobs(cpus: int) -> int:
    """ninja's GuessParallelism(): 2 for 0–1 CPUs, 3 for 2, else CPUs + 2."""
    if cpus <= 1:
        return 2
    if cpus == 2:
        return 3
    return cpus + 2


def jobs_of(ninja: Dict[str, Any], env_jobs: Optional[str], cpus: int) -> int:
    argv = ninja.get("argv") or []
    for i, a in enumerate(argv):
        val = None
        if a == "-j" and i + 1 < len(argv):
            val = argv[i + 1]
        elif a.startswith("-j") and a[2:].isdigit():
            val = a[2:]
        if val and val.isdigit():
            return int(val) or 1 << 10  # -j0 means unlimited
    for v in (ninja.get("env_max_jobs"), env_jobs):
        if v and v.isdigit() and int(v) > 0:
            return int(v)
    return ninja_default_jobs(cpus)


def check(snap: Snapshot) -> Iterable[Finding]:
    host = snap.data("host")
    avail = host.get("mem_available")
    cpus = host.get("cpu_affinity") or host.get("cpu_count") or 1
    if not avail:
        return
    env_jobs = (snap.context.get("env") or {}).get("MAX_JOBS")
    rows: List[Dict[str, Any]] = []
    items = stuck_trees(snap, target_only=False)  # every build on the host shares its RAM
    if not any(it["tree"]["root"].get("in_target", True) for it in items):
        return
    for item in items:
        tree, s = item["tree"], item["sum"]
        ninja = next((p for p in tree["procs"] if p.get("name") == "ninja"), None)
        name = tree["module_dir"].rstrip("/").rsplit("/", 1)[-1]
        jobs = jobs_of(ninja, env_jobs, cpus) if ninja else 1
        seen = max((p.get("rss_end") or p.get("rss") or 0 for p in tree["procs"]
                    if p.get("name") != "ninja"), default=0)
        peak = max(job_peak_bytes(name), seen)
        rows.append({"module": name, "jobs": jobs, "peak": peak, "rss": s["rss"],
                     "pid": tree["root"]["pid"]})
    if not rows:
        return
    need = sum(r["jobs"] * r["peak"] for r in rows)
    in_use = sum(r["rss"] for r in rows)
    if need <= avail + in_use:
        return
    per_job = max(r["peak"] for r in rows) * len(rows)
    max_jobs = max(1, int((avail + in_use) * HEADROOM // per_job))
    if max_jobs >= max(r["jobs"] for r in rows):
        return
    evidence = [
        f"{r['module']} (ninja pid {r['pid']}): {r['jobs']} jobs × ≈{fmt_rss(r['peak'])} per job "
        f"= {fmt_rss(r['jobs'] * r['peak'])}; now using {fmt_rss(r['rss'])}" for r in rows
    ]
    evidence.append(f"available memory: {fmt_rss(avail)} (+{fmt_rss(in_use)} already used by "
                    f"the build); {cpus} CPUs; MAX_JOBS={env_jobs or 'unset'}")
    yield Finding(
        id=ID, severity="warning", subject="host", data={"max_jobs": max_jobs,
                                                         "need_bytes": need, "available": avail},
        title=f"live build may need {fmt_rss(need)} with {fmt_rss(avail)} available: "
        f"set MAX_JOBS={max_jobs}",
        evidence=evidence,
        fixes=[Fix(description=f"Cap parallel compile jobs at {max_jobs} for the server "
                   "(takes effect on the next build)",
                   commands=[f"export MAX_JOBS={max_jobs}"], id="set-max-jobs", safety="safe")],
    )
