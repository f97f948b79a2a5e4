"""build-memory-thrash: a live build at its memory limit reclaims and refaults instead of being killed.

What: with ``--pid``, a FlashInfer build in the server's memory cgroup while
that cgroup (read twice, 0.5 s apart) sits at its limit (usage ≥ 95 %, anon ≥
85 %), hits it thousands of times a second (v1 ``memory.failcnt``, v2
``memory.events`` ``max``; or v2 PSI ``full avg10`` ≥ 10 %), kills nothing
(``oom_kill`` +0) and the build's compilers take major page faults
(``/proc/PID/stat`` majflt) over the sampling window.
Why: when the compilers' own code pages (cicc, cudafe++, cc1plus text) are
charged to the cgroup, the kernel can always reclaim *something*, so it never
OOM-kills: it evicts the code the compiler is running and faults it straight
back in. The build burns CPU in the kernel (build-process-stuck would call
it "progressing") and makes almost no progress, for seconds or many minutes: a server
that sits silent, no error, no kill (seen for real: 200 MB, cudafe++ at 193 MB
anon, failcnt +20,000–116,000/s, 130–375 major faults/s, oom_kill 0).
Fix: raise the memory limit; ``MAX_JOBS`` (``set-max-jobs``) only where fewer
jobs fit (fidoctor.flashinfer.jobmem, the table build-killed uses); to free the server now,
``terminate-build-tree`` (caution, only when asked by name: the step re-checks
on the live cgroup that it still thrashes right before signalling).
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List

from fidoctor.flashinfer.modnames import short_name
from fidoctor.model import Finding, Fix
from fidoctor.probes._facts import env_fix, fmt_age
from fidoctor.probes._fsfacts import gib
from fidoctor.probes._memcg import job_figures, jobs_that_fit, thrashing
from fidoctor.proctree import fmt_rss, safe_pgids
from fidoctor.snapshot import Snapshot

ID = "build-memory-thrash"
REQUIRES = ("oom", "processes")
CAUSE = True


def _cgroup_evidence(cg: Dict[str, Any], v: Dict[str, Any]) -> List[str]:
    s = cg.get("sample") or {}
    st = cg.get("stat") or {}
    w = v["window_s"]
    hits = "failcnt" if cg.get("version") == 1 else "memory.events max"
    n = s.get("failcnt") if cg.get("version") == 1 else s.get("max")
    out = [f"memory cgroup {cg.get('path')} (cgroup v{cg.get('version')}, {cg.get('dir')}): usage "
           f"{fmt_rss(v['usage'])} of a {fmt_rss(v['limit'])} limit"
           + (f" (anon {fmt_rss(st['anon'])}, page cache {fmt_rss(st.get('file'))}): the "
              "compilers' data fills it, their code no longer fits beside it"
              if st.get("anon") is not None else ""),
           f"over {w:.2f} s: {hits} +{n or 0:,} ({v['hit_rate']:,.0f}/s: charges that hit the "
           f"limit and forced reclaim), major faults +{s.get('pgmajfault') or 0:,}, "
           f"workingset_refault_file +{s.get('refault_file') or 0:,}, oom_kill +0 (total "
           f"{(cg.get('events') or {}).get('oom_kill', 0)}): the kernel reclaims and refaults "
           "instead of killing"]
    psi = v.get("psi")
    if psi:
        out.append(f"memory.pressure (PSI): some avg10 {psi.get('some_avg10', 0):.1f} %, full "
                   f"avg10 {psi.get('full_avg10', 0):.1f} % of the time stalled on memory")
    elif cg.get("version") == 1:
        out.append("cgroup v1 keeps no per-cgroup memory pressure (PSI): judged on usage, "
                   "failcnt and major faults alone")
    else:
        out.append("no memory.pressure here (PSI off): judged on usage, memory.events max and "
                   "major faults alone")
    return out


def _fixes(snap: Snapshot, names: List[str], limit: int, tree_pids: List[int]) -> tuple:
    kinds, peak, per_job, cores, jobs_now = job_figures(snap, names)
    fit, max_jobs = jobs_that_fit(limit, peak, cores, jobs_now)
    fixes: List[Fix] = []
    if max_jobs:
        fixes.append(env_fix(
            "set-max-jobs", ID, "MAX_JOBS", str(max_jobs),
            f"Build with MAX_JOBS={max_jobs} (now {jobs_now}; ≈{per_job:g} GiB per "
            f"{kinds[0]} job, {gib(limit)} limit): takes effect on the next build"))
    fixes.append(Fix(
        description=f"Raise the server's memory limit ({gib(limit)} now; ≈{per_job:g} GiB per "
        f"{kinds[0]} compile job, and the compilers' code must fit beside their data)"
        + ("" if fit >= 1 else ": not even one job fits, fewer jobs cannot help"),
        commands=[f"# e.g. docker run --memory {int(per_job * max(fit, 1) * 2 + 1)}g …, or the "
                  "Kubernetes/Slurm memory request"], safety="caution"))
    pids = " ".join(map(str, tree_pids))
    fixes.append(Fix(
        id="terminate-build-tree", safety="caution",
        description="To free the server now: end this build tree (TERM, grace, KILL; asked "
        "for by name, re-checked to be still thrashing right before); its request fails and "
        "the module is rebuilt on next use, so raise the limit first",
        commands=[f"fidoctor fix --only {ID} --use terminate-build-tree",
                  f"# by hand: kill -TERM {pids}; sleep 10; kill -KILL {pids}"]))
    return fixes, {"max_jobs": max_jobs, "jobs_now": jobs_now, "per_job_gib": per_job,
                   "jobs_fit": fit}


def check(snap: Snapshot) -> Iterable[Finding]:
    builds = thrashing(snap)
    if not builds:
        return
    cg = snap.data("oom").get("cgroup") or {}
    groups = snap.data("processes").get("groups", {})
    pwin = snap.data("processes").get("sample_window_s") or 0.0
    for b in builds:
        tree, s, v = b["tree"], b["sum"], b["cgroup"]
        mod_dir = tree["module_dir"]
        name = mod_dir.rstrip("/").rsplit("/", 1)[-1]
        evidence = _cgroup_evidence(cg, v)
        by_pid = {p["pid"]: p for p in tree["procs"]}
        busy = sorted(((pid, n) for pid, n in b["faulting"].items() if n),
                      key=lambda kv: -kv[1])[:4]
        if b["majflt_source"] == "compilers" and busy:
            evidence.append(f"major page faults over the {pwin:.2f} s window: " + ", ".join(
                f"{by_pid[pid].get('name')} pid {pid} +{n:,} (total "
                f"{by_pid[pid].get('majflt_end') or by_pid[pid].get('majflt') or 0:,})"
                for pid, n in busy) + f" ({b['majflt_rate']:,.0f}/s): they refault their own code")
        elif b["majflt_source"] != "compilers":
            evidence.append("the compilers' /proc/PID/stat could not be read: the cgroup's "
                            f"major faults stand in ({b['majflt_rate']:,.0f}/s)")
        evidence.append(f"the tree burnt +{s['cpu_delta']:.2f} s CPU over the window, mostly "
                        "in-kernel reclaim: it looks busy and makes next to no progress "
                        f"(running {fmt_age(s['age'])})")
        fixes, jobs = _fixes(snap, [name], v["limit"], s["pids"])
        yield Finding(
            id=ID, severity="error", subject=mod_dir, evidence=evidence, fixes=fixes,
            title=f"build of {short_name(name)} is thrashing at its {gib(v['limit'])} memory "
            "limit: the kernel reclaims and refaults the compilers' code instead of "
            "OOM-killing; it can sit like this for many minutes",
            data=dict(jobs, **{
                "affects": [name], "module": name, "module_dir": mod_dir,
                "pids": s["pids"], "pgids": safe_pgids(s["pids"], groups),
                "sid": tree["root"].get("sid"),
                "create_times": {str(p["pid"]): p.get("create_time") for p in tree["procs"]},
                "progressing": s["progressing"], "orphaned": s["orphaned"],
                "thrash_dir": cg.get("dir"), "cgroup_version": cg.get("version"),
                "usage": v["usage"], "limit": v["limit"], "anon": v["anon"],
                "limit_hits_per_s": round(v["hit_rate"], 1),
                "majflt_per_s": round(b["majflt_rate"], 1), "psi": v["psi"]}))
