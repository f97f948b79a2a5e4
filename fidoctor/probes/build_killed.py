"""build-killed: a module's last build died to the OOM killer (a memory limit), not to a bug.

What: the server's memory cgroup (``--pid``: ``/proc/PID/cgroup``) counts OOM
kills (v2 ``memory.events`` ``oom_kill``, v1 ``memory.oom_control``
``oom_kill`` and ``memory.failcnt``), and/or the kernel log names a killed
compiler (cicc, cc1plus, ptxas, cudafe++, …) in exactly that cgroup (the
counters also count descendant cgroups; v2's ``memory.events.local`` does
not, so only it, or a count with no readable kernel log, is trusted alone), or, without
``--pid``, in fidoctor's own cgroup (the same container) within 15 minutes
after a half-built module was last written. Kills in other cgroups are never
blamed on this cache (on a shared host they are someone else's builds).
Why: ninja runs cores + 2 compile jobs; CUTLASS-heavy ones peak at 3–8 GiB
each (FlashInfer#3634). The kill leaves ``Killed signal terminated program
cc1plus`` / exit 137 and a half-built module; rebuilding it with the same
``-j`` in the same memory dies the same way.
Fix: ``MAX_JOBS`` so the jobs fit the limit (env file, ``set-max-jobs``),
then rebuild; when not even one job fits, raise the memory limit instead
(set-max-jobs is then not offered: it cannot work).
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List

from fidoctor.model import Finding, Fix
from fidoctor.probes._facts import builders, env_fix, has_build_files, iter_modules, so_problem
from fidoctor.probes._fsfacts import gib
from fidoctor.probes._memcg import job_figures, jobs_that_fit
from fidoctor.snapshot import Snapshot
from fidoctor.snapshot.types import ModuleFacts

ID = "build-killed"
REQUIRES = ("oom", "cache")
CAUSE = True
TIE_BEFORE_S, TIE_AFTER_S = 5, 900


def _incomplete(snap: Snapshot) -> List[ModuleFacts]:
    return [m for _, m in iter_modules(snap) if not m.get("error") and so_problem(m)
            and has_build_files(m) and not builders(snap, m["path"])]


def _tied_by_time(kill: Dict[str, Any], mods: List[ModuleFacts]) -> List[str]:
    t = kill.get("time") or 0
    return [m["name"] for m in mods
            if (w := m.get("newest_mtime")) and w - TIE_BEFORE_S <= t <= w + TIE_AFTER_S]


def check(snap: Snapshot) -> Iterable[Finding]:
    oom = snap.data("oom")
    cg = oom.get("cgroup", {})
    kern = oom.get("kernel", {})
    pid = snap.context.get("pid")
    mods = _incomplete(snap)
    local = cg.get("events_local")
    counter = local if local is not None else (cg.get("events") or {})
    cg_kills = int(counter.get("oom_kill", 0)) if pid else 0
    path = cg.get("path") or ""
    tied: List[Dict[str, Any]] = []
    tied_mods: List[str] = []
    for k in kern.get("kills", []):
        memcg = k.get("task_memcg") or k.get("memcg") or ""
        if pid and path and memcg == path:
            tied.append(k)
        elif not pid and path and memcg == path:  # the cgroup fidoctor runs in (a container)
            names = _tied_by_time(k, mods)
            if names:
                tied.append(k)
                tied_mods += names
    # v1's oom_kill (and v2's memory.events) also count kills in descendant cgroups
    # (someone else's builds): a count alone is trusted only when it is local, or when
    # the kernel log, which names the killed task's cgroup, could not be read.
    if not tied and not (cg_kills and (local is not None or kern.get("status") != "ok")):
        return
    affected = sorted(set(tied_mods)) if not pid else [m["name"] for m in mods]
    evidence: List[str] = []
    if pid:
        ev = ", ".join(f"{k} {v}" for k, v in (cg.get("events") or {}).items())
        evidence.append(f"the server's memory cgroup {path} (cgroup v{cg.get('version')}, "
                        f"{cg.get('dir')}; from {cg.get('source')}): {ev}"
                        + (f", failcnt {cg['failcnt']}" if cg.get("failcnt") is not None else "")
                        + (f", limit {gib(cg['limit'])}" if cg.get("limit") else "")
                        + (f", peak {gib(cg['peak'])}" if cg.get("peak") else ""))
    for k in tied[-3:]:
        evidence.append(f"kernel log (/dev/kmsg): {k['line']}"
                        + (f" [memcg {k.get('task_memcg')}]" if k.get("task_memcg") else ""))
    if not pid:
        evidence.append(f"no --pid: compilers killed in fidoctor's own cgroup ({path}) tied to "
                        "modules by time (last written up to 15 min before the kill)")
    elif kern.get("status") != "ok":
        evidence.append(f"kernel log not read ({kern.get('status')}: {kern.get('error', '')}): "
                        "which process died is not known")
    for m in mods[:3]:
        if m["name"] in affected:
            evidence.append(f"{m['path']}: {so_problem(m)}, {m.get('objects', 0)} object(s)"
                            + (f", {len(m['stale_depfiles'])} leftover depfile(s)"
                               if m.get("stale_depfiles") else ""))
    kinds, peak, per_job, cores, jobs_now = job_figures(snap, affected)
    limit = cg.get("limit") if pid else None
    mem = limit or snap.data("host").get("mem_total")
    fixes: List[Fix] = []
    max_jobs = None
    if mem:
        fit, max_jobs = jobs_that_fit(mem, peak, cores, jobs_now)
        if max_jobs:
            fixes.append(env_fix(
                "set-max-jobs", ID, "MAX_JOBS", str(max_jobs),
                f"Build with MAX_JOBS={max_jobs} (now {jobs_now}; ≈{per_job:g} GiB "
                f"per {kinds[0]} job, {gib(mem)} {'limit' if limit else 'of memory'}), then rebuild"))
        if fit < 1:
            fixes.append(Fix(
                description=f"Not even one {kinds[0]} compile job (≈{per_job:g} GiB) fits the "
                f"{gib(mem)} {'memory limit' if limit else 'memory'}: raise the server's memory "
                "limit (fewer jobs cannot help)",
                commands=[f"# e.g. docker run --memory {int(per_job * 2 + 1)}g …, or the "
                          "Kubernetes/Slurm memory request"], safety="caution"))
    severity = "error" if (affected or tied) else "warning"
    yield Finding(
        id=ID, severity=severity, subject=path or (affected[0] if affected else ""),
        title=(f"the last build of {len(affected)} module(s) was killed for memory (OOM killer)"
               if affected else "compilers were killed for memory (OOM killer) in the server's "
               "cgroup" if pid else "compilers were killed for memory (OOM killer)"),
        evidence=evidence, fixes=fixes,
        data={"affects": affected if severity == "error" else [], "oom_kill": cg_kills,
              "kills": [{"pid": k.get("pid"), "task": k.get("task"), "time": k.get("time")}
                        for k in tied[-10:]],
              "max_jobs": max_jobs, "jobs_now": jobs_now, "limit": limit,
              "per_job_gib": per_job})
