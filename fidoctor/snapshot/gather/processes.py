"""Processes that build FlashInfer modules, and the Python processes above them.

Every compiler-like process (ninja, nvcc, cicc, ptxas, cudafe++, cc1plus, ld…)
is recorded with its ancestry; each is tied to the ``cached_ops/<module>`` dir
it works on (from argv or cwd, else inherited from its parent). Processes we
may not inspect are recorded as such, not skipped silently.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List

import psutil

from fidoctor.flashinfer.builds import COMPILERS, module_dir_of

NAME = "processes"
BUDGET_S = 6.0
ORDER = 4
ARGV_CHARS = 4000


def _describe(p: psutil.Process) -> Dict[str, Any]:
    d: Dict[str, Any] = {"pid": p.pid}
    with p.oneshot():
        try:
            d["ppid"] = p.ppid()
            d["name"] = p.name()
            d["state"] = p.status()
            d["create_time"] = p.create_time()
            d["argv"] = p.cmdline()
            ct = p.cpu_times()
            d["cpu_s"] = round(ct.user + ct.system, 3)
            d["rss"] = p.memory_info().rss
            d["uid"] = p.uids().real
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            d.setdefault("state", "gone")
        except psutil.AccessDenied:
            d["denied"] = True
        try:
            d["cwd"] = p.cwd()
        except (psutil.Error, OSError):
            d["cwd"] = None
    try:
        d["pgid"] = os.getpgid(p.pid)
        d["sid"] = os.getsid(p.pid)
    except OSError:
        pass
    joined = " ".join(d.get("argv") or [])
    if len(joined) > ARGV_CHARS:
        d["argv"] = [joined[:ARGV_CHARS] + " …"]
        d["argv_truncated"] = True
    return d


def gather(ctx, done) -> Dict[str, Any]:
    by_pid: Dict[int, Dict[str, Any]] = {}
    parents: Dict[int, int] = {}
    for p in psutil.process_iter(["name", "ppid"]):
        name = p.info.get("name") or ""
        parents[p.pid] = p.info.get("ppid") or 0
        if name in COMPILERS:
            by_pid[p.pid] = _describe(p)
    # Keep only compiler trees that touch a FlashInfer module dir (other users' and
    # other tools' compilers share the process table), plus their ancestors.
    for d in by_pid.values():
        d["module_dir"] = module_dir_of(d.get("argv") or [], d.get("cwd"))
    changed = True
    while changed:
        changed = False
        for d in by_pid.values():
            if d["module_dir"] is None:
                parent = by_pid.get(d.get("ppid", 0))
                if parent and parent.get("module_dir"):
                    d["module_dir"] = parent["module_dir"]
                    changed = True
    keep: Dict[int, Dict[str, Any]] = {pid: d for pid, d in by_pid.items() if d["module_dir"]}
    for d in list(keep.values()):
        ppid = d.get("ppid", 0)
        while ppid and ppid not in keep and ppid != 1:
            try:
                keep[ppid] = dict(_describe(psutil.Process(ppid)), module_dir=None)
            except psutil.Error:
                break
            ppid = parents.get(ppid) or keep[ppid].get("ppid", 0)
    procs: List[Dict[str, Any]] = sorted(keep.values(), key=lambda d: d["pid"])
    for d in procs:
        d["module"] = os.path.basename(d["module_dir"]) if d.get("module_dir") else None
    return {"processes": procs, "self_pid": os.getpid()}
