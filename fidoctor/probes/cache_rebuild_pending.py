"""cache-rebuild-pending: the next start will recompile modules that are already cached.

What: built modules whose ``build.ninja`` recorded a ``cuda_home`` (or
``cxx``) string other than the one the target resolves now (CUDA_HOME,
CUDA_PATH, ``which nvcc``, /usr/local/cuda, as FlashInfer 0.4+ does: the
string, not the realpath), confirmed by the real ``ninja -n -d explain`` on
a sample with the file as FlashInfer would rewrite it; or modules ninja finds
out of date as they are (sources newer than objects after a reinstall).
Says how many modules and about how long the rebuild takes here.
Why: FlashInfer rewrites ``build.ninja`` when its text changes and ninja then
recompiles every object: "~30 min rebuilds" (FlashInfer#4884), "every vLLM
restart triggers a full recompilation" (PR#3579). Two launchers with
different CUDA_HOME strings make the rebuilds ping-pong.
Fix: when both strings name the same toolkit, pin the recorded string
(``CUDA_HOME=<recorded>`` in the env file) so the cache stays valid; when
the toolkit really changed, warm the cache up before serving.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterable, List

from fidoctor.flashinfer.eta import estimate, jobs_for
from fidoctor.flashinfer.modnames import short_name
from fidoctor.model import Finding, Fix
from fidoctor.probes._facts import env_fix
from fidoctor.snapshot import Snapshot

ID = "cache-rebuild-pending"
REQUIRES = ("rebuild",)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


def _eta(snap: Snapshot, names: List[str]) -> Dict[str, Any]:
    cores = snap.data("host").get("cpu_count") or os.cpu_count() or 1
    jobs = jobs_for(snap.context.get("env") or {}, cores)
    total, known = 0.0, 0
    for n in names:
        est = estimate(n, cores=cores, jobs=jobs)
        if est is not None:
            total += est.seconds
            known += 1
    return {"seconds": round(total), "estimated": known, "cores": cores, "jobs": jobs}


def check(snap: Snapshot) -> Iterable[Finding]:
    rb = snap.data("rebuild")
    now = rb.get("now", {})
    differ = rb.get("differ", [])
    explained = rb.get("explained", [])
    as_now = [e for e in explained if e.get("variant") == "as-now"]
    confirmed = [e for e in as_now if e.get("status") == "ok" and e.get("work", 0) > 0]
    refuted = [e for e in as_now if e.get("status") == "ok" and e.get("work", 0) == 0]
    if differ and (confirmed or not refuted):
        yield _changed_strings(snap, rb, now, differ, confirmed, as_now)
    stale = [e for e in explained if e.get("variant") == "as-is" and e.get("status") == "ok"
             and e.get("work", 0) > 0]
    if stale:
        yield _out_of_date(snap, rb, stale)


def _changed_strings(snap, rb, now, differ, confirmed, as_now) -> Finding:
    n = rb.get("differ_count", len(differ))
    recorded = sorted({d["recorded"].get("cuda_home") for d in differ if "cuda_home" in d["fields"]}
                      - {None})
    eta = _eta(snap, [d["module"] for d in differ])
    evidence = [f"now: cuda_home = {now.get('cuda_home')} (from {now.get('cuda_home_source')}), "
                f"cxx = {now.get('cxx')}"]
    for d in differ[:3]:
        bits = ", ".join(f"{k} = {d['recorded'].get(k)}" for k in d["fields"])
        evidence.append(f"{d['path']}/build.ninja: {bits}")
    if n > 3:
        evidence.append(f"… {n - 3} more module(s) recorded another string")
    for e in confirmed[:2]:
        evidence.append(f"{rb.get('ninja')} -n -d explain (build.ninja as FlashInfer would "
                        f"rewrite it) on {short_name(e['module'])}: {e['work']} edge(s) to run; "
                        + "; ".join(e.get("first", [])[:1]))
    if not confirmed:
        why = "; ".join(f"{e.get('status')}: {e.get('error', '')}" for e in as_now[:2]) or \
            "no sample could be run"
        evidence.append(f"not confirmed by ninja ({why})")
    if eta["estimated"]:
        evidence.append(f"expected rebuild time here: about {_minutes(eta['seconds'])} for "
                        f"{eta['estimated']} module(s) ({eta['jobs']} jobs on {eta['cores']} "
                        "cores; fidoctor.flashinfer.eta)")
    toolkits = rb.get("recorded_toolkits", {})
    now_real = os.path.realpath(now.get("cuda_home") or "/") if now.get("cuda_home") else None
    fixes: List[Fix] = []
    same_tk = [h for h in recorded if toolkits.get(h, {}).get("nvcc")
               and toolkits[h].get("realpath") == now_real]
    if len(recorded) == 1 and same_tk:
        fixes.append(env_fix(
            "pin-cuda-home", ID, "CUDA_HOME", same_tk[0],
            f"Pin CUDA_HOME to the string the cache was built with ({same_tk[0]}, "
            f"the same toolkit as {now.get('cuda_home')}): the cached modules stay valid"))
    fixes.append(Fix(
        description="Or accept the new toolkit and rebuild before serving (guarded, with "
        "progress), so the server does not compile on its first request",
        commands=["fidoctor warmup"], safety="safe"))
    threads = sorted({d["recorded"]["nvcc_threads"] for d in differ
                      if "nvcc_threads" in d["fields"]})
    if threads:
        fixes.insert(len([f for f in fixes if f.id]), Fix(
            description=f"Keep FLASHINFER_NVCC_THREADS at the value the cache was built with "
            f"({threads[0]}; the target now asks for {now.get('nvcc_threads')})",
            commands=[f"export FLASHINFER_NVCC_THREADS={threads[0]}"], safety="safe"))
        evidence.append(f"nvcc --threads differs in {len([d for d in differ if d.get('sampled')])}"
                        f" of {rb.get('threads_sampled', 0)} sampled module(s): recorded "
                        f"{', '.join(threads)}, FLASHINFER_NVCC_THREADS gives "
                        f"{now.get('nvcc_threads')} (it applies to every module)")
    ccbins = sorted({str(d["recorded"].get("ccbin")) for d in differ if "ccbin" in d["fields"]})
    if ccbins:
        evidence.append(f"nvcc -ccbin differs in a sample: recorded {', '.join(ccbins)} "
                        f"(None: no -ccbin), CC now gives {now.get('cc')}")
    changed = []
    if recorded:
        changed.append(f"cuda_home ({', '.join(recorded)})")
    if any("cxx" in d["fields"] for d in differ):
        changed.append("cxx")
    if threads:
        changed.append(f"nvcc --threads ({', '.join(threads)})")
    if ccbins:
        changed.append(f"-ccbin ({', '.join(ccbins)})")
    return Finding(
        id=ID, severity="warning", subject=now.get("cuda_home") or "",
        title=f"the next start recompiles {n} cached module(s): their build.ninja recorded "
        f"another {' and '.join(changed)} than the target would write now"
        + (f" (about {_minutes(eta['seconds'])})" if eta["estimated"] else ""),
        evidence=evidence, fixes=fixes,
        data={"modules": [d["module"] for d in differ], "count": n,
              "recorded_cuda_home": recorded, "cuda_home": now.get("cuda_home"),
              "confirmed": bool(confirmed), "eta_s": eta["seconds"],
              "pin_cuda_home": same_tk[0] if len(recorded) == 1 and same_tk else None})


def _out_of_date(snap, rb, stale) -> Finding:
    eta = _eta(snap, [e["module"] for e in stale])
    evidence = [f"{rb.get('ninja')} -n -d explain in {e['module_dir']}: {e['work']} edge(s); "
                + "; ".join(e.get("first", [])[:1]) for e in stale[:3]]
    evidence.append(f"sampled {len([e for e in rb.get('explained', []) if e.get('variant') == 'as-is'])}"
                    " module(s) whose build.ninja matches the target")
    return Finding(
        id=ID, severity="warning", subject=stale[0]["module_dir"],
        title=f"{len(stale)} sampled module(s) are out of date for ninja and recompile on the "
        "next start (sources or inputs newer than their objects)",
        evidence=evidence,
        fixes=[Fix(description="Rebuild them now, before serving", commands=["fidoctor warmup"],
                   safety="safe")],
        data={"modules": [e["module"] for e in stale], "count": len(stale), "confirmed": True,
              "eta_s": eta["seconds"]})
