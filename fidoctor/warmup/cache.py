"""``--check``, ``--clear-incomplete``, ``--once``: the seeds' switches, made careful.

A module dir is *complete* when ``<name>.so`` is a valid ELF and no compile
is leftover (``*.o.d`` depfiles mean a compile was running or was killed —
ninja deletes them once merged). Incomplete dirs are moved aside (journalled),
never deleted, and never while a build works in them (lock held or a
compiler names the dir).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, List, Mapping

from fidoctor.flashinfer.layout import discover_workspaces
from fidoctor.fsutil import elf_header_problem
from fidoctor.warmup.jobs import find_builders
from fidoctor.warmup.quarantine import move_aside
from fidoctor.warmup.watch import lock_holders


def cache_root(env: Mapping[str, str]) -> str:
    base = env.get("FLASHINFER_WORKSPACE_BASE") or env.get("HOME") or os.path.expanduser("~")
    return os.path.join(base, ".cache", "flashinfer")


def module_state(ws: str, name: str) -> Dict[str, Any]:
    d = os.path.join(ws, "cached_ops", name)
    so = os.path.join(d, f"{name}.so")
    try:
        entries = os.listdir(d)
    except OSError:
        entries = []
    problem = elf_header_problem(so) if os.path.exists(so) else "no .so"
    if problem is None and any(e.endswith(".o.d") for e in entries):
        problem = "leftover depfiles (a compile was killed)"
    st = os.stat(so) if os.path.exists(so) else None
    return {"name": name, "dir": d, "complete": problem is None, "problem": problem,
            "size": st.st_size if st else None, "mtime": st.st_mtime if st else None}


def scan(env: Mapping[str, str]) -> List[Dict[str, Any]]:
    """Every workspace under the cache root with its modules' states."""
    out = []
    for w in discover_workspaces(cache_root(env)):
        ops = os.path.join(w["path"], "cached_ops")
        try:
            names = sorted(n for n in os.listdir(ops)
                           if n != "tmp" and os.path.isdir(os.path.join(ops, n)))
        except OSError:
            names = []
        out.append(dict(w, modules=[module_state(w["path"], n) for n in names]))
    return out


def busy(ws: str, name: str) -> str:
    """Why a module dir must not be touched now ('' when it may)."""
    lock = os.path.join(ws, "cached_ops", "tmp", f"{name}.lock")
    holders = lock_holders(lock)
    if holders:
        return f"its lock is held by pid {holders[0]}"
    procs = find_builders([os.path.join(ws, "cached_ops", name)])
    if procs:
        return f"pid {procs[0].pid} ({procs[0].name()}) works in it"
    return ""


def render_check(workspaces: List[Dict[str, Any]], now: float) -> List[str]:
    lines = []
    for w in workspaces:
        good = [m for m in w["modules"] if m["complete"]]
        bad = [m for m in w["modules"] if not m["complete"]]
        lines.append(f"{w['path']} (version {w.get('version') or '?'}, arch {w.get('arch') or '?'}):"
                     f" Found {len(good)} compiled kernel(s), {len(bad)} incomplete")
        for m in good:
            age = (now - m["mtime"]) / 3600 if m["mtime"] else 0
            lines.append(f"  ok          {m['size'] / 1e6:7.1f} MB  {age:6.1f} h  {m['name']}")
        for m in bad:
            lines.append(f"  INCOMPLETE  {m['problem']}: {m['name']}")
    if not workspaces:
        lines.append("no FlashInfer workspace found")
    return lines


def clear_incomplete(env: Mapping[str, str]) -> List[str]:
    lines = []
    for w in scan(env):
        for m in w["modules"]:
            if m["complete"]:
                continue
            why = busy(w["path"], m["name"])
            if why:
                lines.append(f"left {m['dir']}: {why}")
                continue
            out = move_aside(m["dir"], f"--clear-incomplete: {m['problem']}", dict(env))
            if out.get("moved_to"):
                undo = f"fidoctor undo --id {out['txid']}" if out.get("txid") else out.get("record")
                lines.append(f"moved {m['dir']} aside to {out['moved_to']} (undo: {undo})")
            else:
                lines.append(f"could not move {m['dir']}: {out.get('error')}")
    return lines or ["no incomplete module dirs"]


def once_satisfied(flag: str, specs_info: Dict[str, Dict[str, Any]]) -> bool:
    """The flag exists and every module of the set is still in the cache."""
    if not os.path.exists(flag):
        return False
    for s in specs_info.values():
        so = s.get("so_path")
        if not so or elf_header_problem(so) is not None:
            return False
    return True


def write_flag(flag: str, result: Dict[str, Any]) -> None:
    tmp = f"{flag}.tmp.{os.getpid()}"
    d = os.path.dirname(os.path.abspath(flag))
    os.makedirs(d, exist_ok=True)
    with open(tmp, "w") as f:
        json.dump({"time": time.time(), "modules": [m["name"] for m in result["modules"]],
                   "python": result["python"]}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, flag)
