"""Processes that build FlashInfer modules, and the Python processes above them.

Every compiler-like process (ninja, nvcc, cicc, ptxas, cudafe++, cc1plus, ld…)
is recorded with its ancestors up to the first Python (the rest as pids);
each is tied to the ``cached_ops/<module>`` dir it works on (from argv or
cwd, else inherited from its parent). Compilers of
other users and other tools share the process table: a tree that touches no
module dir is dropped. Processes we may not inspect are recorded as such.

Progress vs. stall cannot be seen in one look, so CPU time is read twice,
``ctx.sample_window_s`` apart (default 0.5 s, capped at MAX_WINDOW_S). That
sleep is the only wait, and it is skipped when nothing is building. A step
that starts or ends inside the window is progress too (``appeared`` /
``exited``).

Data contract (``data["processes"]``, one dict per process; never renamed):
pid, ppid, name, argv, cwd, state (psutil status), create_time, cpu_s, rss,
module_dir, module. Added here: exe, state_code (R/S/D/T/Z…), wchan, pgid,
sid, uid, ppid_chain (ppid up to pid 1), cpu_s_end, cpu_delta_s, rss_end,
appeared, exited, vol_ctx_delta (voluntary context switches over the window),
majflt / majflt_end / majflt_delta (major page faults from /proc/PID/stat, via
fidoctor.procfs.read_stat: a compiler refaulting its own code under a memory limit
climbs by hundreds a second), memcg (its memory cgroup path, fidoctor.memcg),
env_max_jobs (ninja only, from its environ), parent_exists, parent_name,
parent_exe, parent_sid, parent_is_python, and on tree roots orphaned (see
fidoctor.proctree.is_orphaned), in_target (the module dir lies in the
target's cache; only those trees are judged and only they cause the sampling
wait). Every descendant of a build is kept whatever its name (a ccache or a
Python nvcc shim hides the real worker). Top level: sample_window_s (measured),
target_root,
groups ({pgid: [every pid in that group]}, for group-safe termination),
self_pid.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Optional, Tuple

import psutil

from fidoctor import procfs, selfprocs
from fidoctor.flashinfer.builds import COMPILERS, module_dir_of
from fidoctor.memcg import memcg_of
from fidoctor.proctree import (
    STATE_LETTER,
    build_trees,
    is_orphaned,
    is_python_exe,
    read_wchan,
    scan_table,
)

NAME = "processes"
BUDGET_S = 6.0
ORDER = 4
ARGV_CHARS = 4000
MAX_WINDOW_S = 2.0
MAX_PROCS = 2000


def _env_var(pid: int, var: str) -> Optional[str]:
    raw = procfs.read_proc(pid, "environ", -1)
    return None if raw is None else procfs.parse_environ(raw).get(var)


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
            d["vol_ctx"] = p.num_ctx_switches().voluntary
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            d.setdefault("state", "gone")
        except psutil.AccessDenied:
            d["denied"] = True
        try:
            d["cwd"] = p.cwd()
        except (psutil.Error, OSError):
            d["cwd"] = None
        try:
            d["exe"] = p.exe()
        except (psutil.Error, OSError):
            d["exe"] = None
    d["state_code"] = STATE_LETTER.get(d.get("state") or "", None)
    d["wchan"] = read_wchan(p.pid)
    try:
        d["pgid"] = os.getpgid(p.pid)
        d["sid"] = os.getsid(p.pid)
    except OSError:
        pass
    if d.get("name") == "ninja":
        d["env_max_jobs"] = _env_var(p.pid, "MAX_JOBS")
    st = procfs.read_stat(p.pid)
    if st is not None:
        d["majflt"] = st["majflt"]
    d["memcg"] = memcg_of(p.pid)
    joined = " ".join(d.get("argv") or [])
    if len(joined) > ARGV_CHARS:
        d["argv"] = [joined[:ARGV_CHARS] + " …"]
        d["argv_truncated"] = True
    return d


def _resample(d: Dict[str, Any]) -> None:
    """Second look at one process after the window: CPU, state, memory."""
    try:
        p = psutil.Process(d["pid"])
        if p.create_time() != d.get("create_time"):
            raise psutil.NoSuchProcess(d["pid"])  # pid reused
        with p.oneshot():
            ct = p.cpu_times()
            d["cpu_s_end"] = round(ct.user + ct.system, 3)
            d["state"] = p.status()
            d["rss_end"] = p.memory_info().rss
            vol = p.num_ctx_switches().voluntary
        st = procfs.read_stat(d["pid"])
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        d["exited"] = True
        d["cpu_delta_s"] = 0.0
        return
    except psutil.AccessDenied:
        return
    d["cpu_delta_s"] = round(max(0.0, d["cpu_s_end"] - (d.get("cpu_s") or 0.0)), 3)
    if d.get("vol_ctx") is not None:
        d["vol_ctx_delta"] = vol - d["vol_ctx"]
    if st is not None and d.get("majflt") is not None:
        d["majflt_end"] = st["majflt"]
        d["majflt_delta"] = max(0, int(st["majflt"]) - d["majflt"])
    d["state_code"] = STATE_LETTER.get(d["state"])
    d["wchan"] = read_wchan(d["pid"]) or d.get("wchan")


def _inherit_module_dirs(by_pid: Dict[int, Dict[str, Any]]) -> None:
    changed = True
    while changed:
        changed = False
        for d in by_pid.values():
            if d.get("module_dir") is None:
                parent = by_pid.get(d.get("ppid", 0))
                if parent and parent.get("module_dir"):
                    d["module_dir"] = parent["module_dir"]
                    changed = True


def _under_builds(table: Dict[int, Tuple[str, int, int]],
                  known: Optional[Dict[int, Dict[str, Any]]] = None) -> Dict[int, Dict[str, Any]]:
    """Compilers working on a module dir, and everything below them (any name).

    A wrapper (ccache, a Python nvcc shim) hides the real worker under a name
    that is not a compiler's; its CPU still counts for the tree's progress.
    """
    known = known or {}
    skip = frozenset(known)
    by_pid: Dict[int, Dict[str, Any]] = {}
    for pid, row in table.items():
        if row[0] in COMPILERS and pid not in skip:
            try:
                d = _describe(psutil.Process(pid))
            except psutil.Error:
                continue
            d["module_dir"] = module_dir_of(d.get("argv") or [], d.get("cwd"))
            by_pid[pid] = d
    _inherit_module_dirs(by_pid)
    anchors = {pid for pid, d in by_pid.items() if d["module_dir"]}
    anchors |= {pid for pid, d in known.items() if d.get("module_dir")}  # not their ancestors
    kids: Dict[int, List[int]] = {}
    for pid, row in table.items():
        kids.setdefault(row[1], []).append(pid)
    todo = [c for a in anchors for c in kids.get(a, [])]
    while todo and len(by_pid) < MAX_PROCS:
        pid = todo.pop()
        if pid in skip or (pid in by_pid and by_pid[pid]["module_dir"]):
            continue
        if pid not in by_pid:
            try:
                by_pid[pid] = dict(_describe(psutil.Process(pid)), module_dir=None)
            except psutil.Error:
                continue
        todo.extend(kids.get(pid, []))
    _inherit_module_dirs(by_pid)
    par = {k: v[1] for k, v in table.items()} if known else {}
    for pid, d in by_pid.items():  # new children of processes already known
        if not d["module_dir"] and known:
            chain = _ppid_chain(pid, par)
            anchor = next((known[c] for c in chain if c in known), None)
            if anchor is not None:
                d["module_dir"] = anchor.get("module_dir")
    return {pid: d for pid, d in by_pid.items() if d["module_dir"] or pid in anchors}


def _ppid_chain(pid: int, parents: Dict[int, int]) -> List[int]:
    chain: List[int] = []
    seen = {pid}
    ppid = parents.get(pid, 0)
    while ppid and ppid not in seen and len(chain) < 64:
        chain.append(ppid)
        seen.add(ppid)
        ppid = parents.get(ppid, 0)
    return chain


def _parent_facts(d: Dict[str, Any], keep: Dict[int, Dict[str, Any]]) -> None:
    ppid = d.get("ppid") or 0
    parent = keep.get(ppid)
    if parent is None and ppid:
        try:
            pp = psutil.Process(ppid)
            parent = {"name": pp.name(), "exe": None, "sid": os.getsid(ppid)}
            try:
                parent["exe"] = pp.exe()
            except (psutil.Error, OSError):
                pass
        except (psutil.Error, OSError):
            parent = None
    d["parent_exists"] = parent is not None
    if parent is not None:
        d["parent_name"] = parent.get("name")
        d["parent_exe"] = parent.get("exe")
        d["parent_sid"] = parent.get("sid")
        d["parent_is_python"] = is_python_exe(parent.get("exe"), parent.get("name"))


def _groups(pgids: set, table: Dict[int, Tuple[str, int, int]]) -> Dict[str, List[int]]:
    """Every pid in each of ``pgids``, from the process table's pgid column."""
    out: Dict[str, List[int]] = {str(g): [] for g in pgids}
    for pid, row in table.items():
        if row[2] in pgids:
            out[str(row[2])].append(pid)
    return out


def _in(path: Optional[str], roots: Tuple[str, ...]) -> bool:
    return path is not None and path != "" and \
        any(os.path.normpath(path).startswith(r + os.sep) for r in roots)


def gather(ctx, done) -> Dict[str, Any]:
    table = scan_table()
    own = selfprocs.own_pids(table)  # fidoctor's warmup child, its gatherers: not builders
    table = {pid: row for pid, row in table.items() if pid not in own}
    parents = {pid: row[1] for pid, row in table.items()}
    root = ctx.flashinfer_root
    roots = tuple({os.path.normpath(root), os.path.realpath(root)})
    keep = {pid: d for pid, d in _under_builds(table).items() if d["module_dir"]}
    for d in keep.values():
        d["in_target"] = _in(d["module_dir"], roots) or _in(os.path.realpath(d["module_dir"]), roots)
    for d in list(keep.values()):
        # Ancestors up to the first Python (the one that started the build); the
        # rest of the chain is kept as pids only (ppid_chain).
        ppid = d.get("ppid", 0)
        while ppid and ppid not in keep and ppid != 1:
            try:
                keep[ppid] = dict(_describe(psutil.Process(ppid)), module_dir=None)
            except psutil.Error:
                break
            if is_python_exe(keep[ppid].get("exe"), keep[ppid].get("name")):
                break
            ppid = parents.get(ppid) or keep[ppid].get("ppid", 0)
    window = 0.0
    last = table
    if any(d.get("in_target") for d in keep.values()):
        # Only the target's own builds are worth a wait; others are listed as seen.
        window = max(0.0, min(float(getattr(ctx, "sample_window_s", 0.5) or 0.0), MAX_WINDOW_S))
        t0 = time.monotonic()
        time.sleep(window)
        later = scan_table()
        own |= selfprocs.own_pids(later)
        later = last = {pid: row for pid, row in later.items() if pid not in own}
        again = _under_builds(later, known=keep)
        for d in keep.values():
            _resample(d)
        window = round(time.monotonic() - t0, 3)
        # Steps ninja started inside the window: new processes below a kept one.
        for pid, d in again.items():
            if pid in keep or not d.get("module_dir"):
                continue
            chain = _ppid_chain(pid, {k: v[1] for k, v in later.items()})
            anchor = next((c for c in chain if c in keep and keep[c].get("module_dir")), None)
            d["appeared"] = True
            d["cpu_delta_s"] = d.get("cpu_s") or 0.0
            d["in_target"] = _in(d["module_dir"], roots) or bool(
                anchor and keep[anchor].get("in_target"))
            keep[pid] = d
            parents[pid] = later[pid][1] if pid in later else d.get("ppid", 0)
    for d in keep.values():
        d["ppid_chain"] = _ppid_chain(d["pid"], parents) or [d.get("ppid", 0)]
        d.pop("vol_ctx", None)
        _parent_facts(d, keep)
    procs: List[Dict[str, Any]] = sorted(keep.values(), key=lambda d: d["pid"])
    for d in procs:
        d["module"] = os.path.basename(d["module_dir"]) if d.get("module_dir") else None
    for tree in build_trees(procs):
        tree["root"]["orphaned"] = is_orphaned(tree["root"])
    pgids = {d["pgid"] for d in procs if d.get("pgid") and d.get("module_dir")}
    return {
        "processes": procs,
        "self_pid": os.getpid(),
        "target_root": root,
        "sample_window_s": window,
        "groups": _groups(pgids, last) if pgids else {},
    }
