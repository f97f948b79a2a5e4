"""How many compile jobs at once, and what to do about orphaned compilers.

MAX_JOBS: FlashInfer runs ``ninja -j $MAX_JOBS`` (else ninja's nproc+2). One
FA3 job peaks near 3.5 GB in cicc, a decode job near 0.5 GB
(real-builds-on-cpu.md), so jobs = min(cores, (available − 1 GiB reserve) /
per-job), at least 1. Available memory is the smaller of MemAvailable and
the cgroup v2 limit's headroom (containers).

Orphans: a killed server leaves ninja/nvcc/cicc running on (about a minute
on an H100 box); a restart compiles the same module again beside them. We
find processes working on the module dir and either end them (default) or
wait for them, and say which.
"""

from __future__ import annotations

import os
import time
from typing import Dict, List, Optional, Tuple

import psutil

from fidoctor.kill import terminate_tree
from fidoctor.warmup.specs import GB_PER_JOB
from fidoctor.warmup.watch import lock_holders

RESERVE = 1 << 30
COMPILERS = ("ninja", "nvcc", "cicc", "ptxas", "cudafe++", "fatbinary", "nvlink", "cc1plus",
             "c++", "g++", "gcc", "ld", "collect2", "sh")


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def available_memory() -> Tuple[int, str]:
    avail = psutil.virtual_memory().available
    src = "MemAvailable"
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            lim = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            cur = int(f.read().strip())
        if lim != "max" and int(lim) - cur < avail:
            avail, src = int(lim) - cur, "cgroup memory.max"
    except (OSError, ValueError):
        pass
    return max(avail, 0), src


def choose_jobs(mem_class: str, override: Optional[int] = None) -> Tuple[int, str]:
    """(MAX_JOBS, why) for a module of ``mem_class`` (decode|fa2|fa3)."""
    n = cores()
    if override:
        return override, f"--jobs {override}"
    avail, src = available_memory()
    per = GB_PER_JOB[mem_class]
    by_mem = int(max(avail - RESERVE, 0) / (per * 1e9))
    jobs = max(1, min(n, by_mem))
    limit = "cores" if jobs == n else "memory"
    return jobs, (f"MAX_JOBS={jobs}: {n} cores, {avail / 2**30:.1f} GiB available ({src}), "
                  f"~{per} GB per {mem_class} job allows {by_mem}; limited by {limit}")


def find_builders(paths: List[str], exclude: Optional[set] = None) -> List[psutil.Process]:
    """Processes whose argv or cwd names one of ``paths`` (module dir, generated dir)."""
    exclude = exclude or set()
    out = []
    for p in psutil.process_iter():
        if p.pid in exclude or p.pid == os.getpid():
            continue
        try:
            if p.name() not in COMPILERS and not p.name().startswith(("python", "cicc", "nvcc")):
                continue
            argv = " ".join(p.cmdline())
            cwd = ""
            try:
                cwd = p.cwd()
            except psutil.Error:
                pass
        except psutil.Error:
            continue
        if any(x and (x in argv or cwd.startswith(x)) for x in paths):
            out.append(p)
    return out


def handle_orphans(spec_info: Dict[str, str], policy: str, wait_limit: float = 600.0
                   ) -> List[str]:
    """Deal with compilers already working on this module; return what was done (lines)."""
    dirs = [d for d in (spec_info.get("module_dir"), spec_info.get("generated_dir")) if d]
    found = find_builders(dirs)
    if not found:
        return []
    holders = set(lock_holders(spec_info.get("lock_path") or ""))
    live, orphans = [], []
    for p in found:
        try:
            chain = {p.pid, *(a.pid for a in p.parents())}
        except psutil.Error:
            continue
        (live if chain & holders else orphans).append(p)
    notes = [f"live build by pid {h} (holds the module lock): warmup will wait for it"
             for h in sorted(holders)] if live else []
    tops = [p for p in orphans if not any(_is_ancestor(q, p) for q in orphans if q is not p)]
    if not tops:
        return notes
    desc = ", ".join(f"{p.pid} {p.name()}" for p in tops)
    if policy == "wait":
        gone, alive = psutil.wait_procs(tops, timeout=wait_limit)
        notes.append(f"waited for orphaned compilers of this module ({desc}): "
                     f"{len(gone)} finished, {len(alive)} still running")
        policy = "end" if alive else policy
        tops = alive
    if policy == "end" and tops:
        left: List[int] = []
        for p in tops:
            left += terminate_tree(p, grace=2.0, follow_session=False)  # p: its identity
        notes.append(f"ended orphaned compilers of this module ({desc}); their output would be "
                     "rebuilt anyway" + (f"; still alive: {left}" if left else ""))
    return notes


def _is_ancestor(a: psutil.Process, b: psutil.Process) -> bool:
    try:
        return a.pid in {x.pid for x in b.parents()}
    except psutil.Error:
        return False


def wait_quiet(seconds: float) -> None:
    time.sleep(seconds)
