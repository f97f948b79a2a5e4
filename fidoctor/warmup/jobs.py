"""How many compile jobs at once, and what to do about orphaned compilers.

MAX_JOBS: FlashInfer runs ``ninja -j $MAX_JOBS`` (else ninja's nproc+2). One
job's peak comes from the one table, ``fidoctor.flashinfer.jobmem.GB_PER_JOB``
(FA3 3.1 GB in cicc, a decode job 0.5 GB), so jobs = min(cores, (available − 1 GiB reserve) /
per-job), at least 1. Available memory is the smaller of MemAvailable and
the cgroup v2 limit's headroom (containers).

Orphans: a killed server leaves ninja/nvcc/cicc running on (about a minute
on an H100 box); a restart compiles the same module again beside them. We
find processes working on the module dir and either end them (default) or
wait for them, and say which.
"""

from __future__ import annotations

import os
import re
from typing import Dict, List, Optional, Tuple

import psutil

from fidoctor.flashinfer.builds import COMPILERS, module_dir_of
from fidoctor.flashinfer.jobmem import GB_PER_JOB
from fidoctor.kill import terminate_tree
from fidoctor.proclocks import lock_holders
from fidoctor.proctree import scan_table

RESERVE = 1 << 30


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


def budget(mem_classes: List[str], override: Optional[int] = None) -> Tuple[int, str, int]:
    """(total jobs, why, available bytes) for one pool shared by modules of these classes.

    ``--jobs`` sets the total, as MAX_JOBS did (the user's call, even above the cores);
    otherwise ≈ cores, capped by memory for the heaviest class in the set (its per-job
    peak, GB_PER_JOB, with RESERVE kept free).
    """
    n = cores()
    avail, src = available_memory()
    if override:
        return override, f"--jobs {override} ({n} cores)", avail
    per = max((GB_PER_JOB[c] for c in mem_classes), default=GB_PER_JOB["decode"])
    by_mem = max(1, int(max(avail - RESERVE, 0) / (per * 1e9)))
    total = max(1, min(n, by_mem))
    limit = "cores" if total == n else "memory"
    return total, (f"{n} cores, {avail / 2**30:.1f} GiB available ({src}), ~{per} GB per "
                   f"job allows {by_mem}; limited by {limit}"), avail


def find_builders(paths: List[str], exclude: Optional[set] = None) -> List[psutil.Process]:
    """Live compilers (the one list, ``flashinfer.builds.COMPILERS``) and Pythons working on
    one of ``paths``: tied to a module dir the way the ``processes`` gatherer ties them
    (``module_dir_of``), or naming a path (the generated sources dir) in their argv."""
    exclude = (exclude or set()) | {os.getpid()}
    want = {os.path.normpath(p) for p in paths if p}
    # A whole path, not a prefix: an FA2 module's dir is the start of its FA3 twin's
    # (``…_f16qk_False`` / ``…_f16qk_False_sm90``); on the H200 the FA3 compilers of the
    # same warmup were taken for "a live build" of the FA2 module.
    named = [re.compile(re.escape(w) + r"(?=[/\s\"':]|$)") for w in want]
    out = []
    for pid, (comm, _ppid, _pgid) in scan_table().items():
        if pid in exclude or not (comm in COMPILERS or comm.startswith("python")):
            continue
        try:
            p = psutil.Process(pid)
            argv = p.cmdline()
            try:
                cwd: Optional[str] = p.cwd()
            except psutil.Error:
                cwd = None
        except psutil.Error:
            continue
        mdir = module_dir_of(argv, cwd)
        joined = " ".join(argv)
        if (mdir and os.path.normpath(mdir) in want) or any(rx.search(joined) for rx in named):
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
    live: List[psutil.Process] = []
    orphans: List[psutil.Process] = []
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
