"""Memory facts that several probes judge: how many jobs fit, and whether a build thrashes.

build-killed and build-memory-thrash both tell the user how many compile jobs
fit a memory limit (``jobs_that_fit``, over fidoctor.flashinfer.jobmem's
table); build-memory-thrash and build-process-stuck both look at a build that
burns CPU at its cgroup's limit (one verdict, ``thrashing``: the cause fires,
the "progressing" note defers).
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from fidoctor.flashinfer.eta import jobs_for, kind_of
from fidoctor.flashinfer.jobmem import job_peak_bytes
from fidoctor.memcg import AT_LIMIT, THRASH_HITS_PER_S
from fidoctor.memcg import hit_rate as limit_hit_rate
from fidoctor.probes._trees import stuck_trees
from fidoctor.snapshot import Snapshot

ANON_SHARE = 0.85     # anon / limit: what is left for code and page cache is squeezed
MAJFLT_PER_S = 10.0   # the build's major faults (thrash seen: 130–375/s from one cudafe++)
PSI_FULL_AVG10 = 10.0  # v2: % of the last 10 s in which every task waited on memory


class JobFigures(NamedTuple):
    kinds: List[str]      # ETA kinds of the modules (an FA2 prefill when none is named)
    peak: int             # bytes of one compile job of the heaviest (flashinfer/jobmem.py)
    per_job_gib: float    # the same, GiB to 0.1, for text and data
    cores: int
    jobs_now: int         # ninja's -j here now (MAX_JOBS, else its default)


def job_figures(snap: Snapshot, names: List[str]) -> JobFigures:
    """What sizing ``MAX_JOBS`` for the modules ``names`` starts from."""
    kinds = [kind_of(n) for n in names] or ["prefill-fa2"]
    peak = max(job_peak_bytes(n) for n in names or kinds)
    cores = snap.data("host").get("cpu_count") or os.cpu_count() or 1
    return JobFigures(kinds, peak, round(peak / (1 << 30), 1), cores,
                      jobs_for(snap.context.get("env") or {}, cores))


def jobs_that_fit(mem: int, peak: int, cores: int,
                  jobs_now: int) -> Tuple[int, Optional[int]]:
    """(jobs of ``peak`` bytes that fit in 90 % of ``mem``, the MAX_JOBS to offer or None).

    None when fewer jobs would not help: none fits (raise the limit instead),
    or as many as run now already fit. ``peak``: fidoctor.flashinfer.jobmem.
    """
    fit = int(mem * 0.9 / peak)
    if fit < 1 or fit >= jobs_now:
        return fit, None
    return fit, min(fit, cores, max(1, jobs_now - 1))


def _in_cgroup(tree: Dict[str, Any], path: str, pid: int) -> bool:
    """The tree runs in the server's memory cgroup (or below it: the limit is hierarchical);
    where no process's cgroup could be read, it descends from the server."""
    cgs = [p.get("memcg") for p in tree["procs"] if p.get("memcg")]
    if cgs:
        base = path.rstrip("/")
        return any(c == path or c.startswith(base + "/") for c in cgs)
    root = tree["root"]
    return pid == root.get("ppid") or pid in (root.get("ppid_chain") or [])


def thrashing(snap: Snapshot) -> List[Dict[str, Any]]:
    """The server's (``--pid``) live FlashInfer builds that thrash at its memory limit.

    One entry per build tree (``tree``, ``sum``, ``majflt`` over the window, per-process
    ``faulting``), all sharing one ``cgroup`` verdict. Empty unless every signal agrees:
    usage at the limit, anon filling it, the limit hit thousands of times a second (v1
    failcnt / v2 ``max``; or v2 PSI full), the build's compilers refaulting, and no OOM
    kill inside the window (then the kernel is killing, not thrashing: build-killed).
    """
    pid = snap.context.get("pid")
    cg = snap.data("oom").get("cgroup") or {}
    s = cg.get("sample") or {}
    lim, w = cg.get("limit"), s.get("window_s") or 0.0
    if not pid or not lim or w <= 0 or not cg.get("path"):
        return []
    usage = s.get("usage_end") or cg.get("usage") or 0
    anon = (cg.get("stat") or {}).get("anon")
    if usage < AT_LIMIT * lim or (anon is not None and anon < ANON_SHARE * lim):
        return []
    if s.get("oom_kill"):
        return []
    hit_rate = limit_hit_rate(s, cg.get("version"))
    psi = cg.get("pressure") or {}
    if hit_rate < THRASH_HITS_PER_S and psi.get("full_avg10", 0.0) < PSI_FULL_AVG10:
        return []
    pwin = snap.data("processes").get("sample_window_s") or 0.0
    out: List[Dict[str, Any]] = []
    for item in stuck_trees(snap):
        tree = item["tree"]
        if not _in_cgroup(tree, cg["path"], pid):
            continue
        live = [p for p in tree["procs"] if not p.get("exited")]
        known = [p for p in live if p.get("majflt_delta") is not None
                 or (p.get("appeared") and p.get("majflt") is not None)]
        faults = {p["pid"]: (p.get("majflt") if p.get("appeared") else p.get("majflt_delta")) or 0
                  for p in known}
        majflt = sum(faults.values())
        if known and pwin > 0:
            rate, src = majflt / pwin, "compilers"
        else:  # no process's /proc/PID/stat was readable: the cgroup's count stands in
            rate, src = (s.get("pgmajfault") or 0) / w, "cgroup"
        out.append({"tree": tree, "sum": item["sum"], "majflt": majflt, "majflt_rate": rate,
                    "majflt_source": src, "faulting": faults})
    if not out or sum(t["majflt_rate"] for t in out) < MAJFLT_PER_S:
        return []
    verdict = {"hit_rate": hit_rate, "usage": usage, "limit": lim, "anon": anon,
               "psi": psi or None, "window_s": w}
    for t in out:
        t["cgroup"] = verdict
    return out


def thrashing_roots(snap: Snapshot) -> Dict[int, str]:
    """{root pid of a thrashing tree: its module dir}, for probes that defer to the cause."""
    return {t["tree"]["root"]["pid"]: os.path.normpath(t["tree"]["module_dir"])
            for t in thrashing(snap)}
