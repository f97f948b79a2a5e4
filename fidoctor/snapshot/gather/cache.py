"""The FlashInfer cache: workspaces, module dirs and lock files, in every layout.

Reads directory entries and a few bytes per file, never whole objects, so a
cache of 1,000 modules scans in tens of milliseconds. Per-directory problems
(permission denied, a symlink loop) are recorded next to the thing they hit.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any, Dict, List, Optional

from fidoctor.flashinfer.layout import discover_workspaces
from fidoctor.fsutil import (
    elf_head_problem,
    elf_header_problem,
    file_kind,
    lstat_info,
    read_head,
    stat_and_head,
)

NAME = "cache"
BUDGET_S = 10.0
SCAN_S = 7.0  # then stop scanning and say what was left (returning the data takes time too)
NEWEST_FIRST_OVER = 200  # module dirs; below this the order cannot matter
ORDER = 2
NINJA_HEAD = 2048
_VAR = re.compile(rb"^(cuda_home|cxx|nvcc|name)\s*=\s*(.*)$", re.M)
_CUDA_EDGE = re.compile(rb"^build [^\n]*: cuda_compile ", re.M)


def _os_error(e: OSError) -> str:
    if isinstance(e, PermissionError):
        return "permission denied"
    return e.strerror or str(e)


def scan_module(path: str, name: str) -> Dict[str, Any]:
    """Facts about one ``cached_ops/<name>/`` directory."""
    mod: Dict[str, Any] = {"name": name, "path": path}
    try:
        with os.scandir(path) as it:
            entries = list(it)
    except OSError as err:
        mod["error"] = _os_error(err)
        return mod
    objects = 0
    depfiles: List[str] = []
    newest = 0.0
    obj_times: List[float] = []
    for e in entries:
        n = e.name
        if n.endswith(".o"):
            objects += 1
            try:
                obj_times.append(e.stat(follow_symlinks=False).st_mtime)
            except OSError:
                pass
        elif n.endswith(".o.d"):
            depfiles.append(n)
    mod["objects"] = objects
    if obj_times:  # cache-stale-version: objects from before and after a reinstall
        mod["objects_mtime"] = [min(obj_times), max(obj_times)]
    mod["stale_depfiles"] = sorted(depfiles)
    names = {e.name for e in entries}
    mod["ninja_lock"] = ".ninja_lock" in names
    mod["has_ninja_log"] = ".ninja_log" in names
    so_name = f"{name}.so"
    sos = sorted(n for n in names if n.endswith(".so"))
    mod["so_files"] = sos
    if so_name in names or sos:
        so_path = os.path.join(path, so_name if so_name in names else sos[0])
        fast = stat_and_head(so_path, 64)  # one open for a plain file (10,000 modules)
        info: Dict[str, Any] = ({"kind": "file", "size": fast[0].st_size,
                                 "mtime": fast[0].st_mtime} if fast else lstat_info(so_path))
        if fast:
            mod["so"] = {"path": so_path, "kind": "file", "size": info["size"],
                         "mtime": info["mtime"], "problem": elf_head_problem(fast[1],
                                                                              info["size"])}
        elif info["kind"] == "symlink":
            info = dict(lstat_info(os.path.realpath(so_path)), symlink=True)
        if not fast:
            mod["so"] = {"path": so_path, "kind": info.get("kind"), "size": info.get("size"),
                         "mtime": info.get("mtime"), "problem": elf_header_problem(so_path)}
        newest = max(newest, info.get("mtime") or 0.0)
    else:
        mod["so"] = None
    if "lock" in names:  # torch FileBaton (FlashInfer ≤ 0.2.5)
        info = lstat_info(os.path.join(path, "lock"))
        mod["baton"] = {"path": os.path.join(path, "lock"), "mtime": info.get("mtime"),
                        "ino": info.get("ino"), "dev": info.get("dev")}
    ninja = os.path.join(path, "build.ninja")
    mod["build_ninja"] = "build.ninja" in names
    if mod["build_ninja"]:
        got = stat_and_head(ninja, NINJA_HEAD if mod["so"] else 1 << 20)
        head: Optional[bytes]
        if got:
            mod["build_ninja_mtime"], head = got[0].st_mtime, got[1]
        else:
            mod["build_ninja_mtime"] = lstat_info(ninja).get("mtime")
            head = read_head(ninja, NINJA_HEAD if mod["so"] else 1 << 20)
        if head is not None:
            mod["ninja_vars"] = {
                k.decode(): v.decode("utf-8", "replace").strip() for k, v in _VAR.findall(head)
            }
            if not mod["so"]:
                mod["cuda_compile_edges"] = len(_CUDA_EDGE.findall(head))
    if not mod["so"]:
        # Progress signal for a build in flight: the newest file in the dir.
        for e in entries:
            try:
                newest = max(newest, e.stat(follow_symlinks=False).st_mtime)
            except OSError:
                pass
    mod["newest_mtime"] = newest or None
    return mod


def _newest_first(entries: List[os.DirEntry]) -> List[os.DirEntry]:
    """Module dirs by mtime, newest first: under a tight budget the build of now comes first."""
    def mtime(e: os.DirEntry) -> float:
        try:
            return e.stat(follow_symlinks=False).st_mtime
        except OSError:
            return 0.0
    return sorted(entries, key=mtime, reverse=True)


def scan_workspace(ws: Dict[str, Any], deadline: Optional[float] = None) -> Dict[str, Any]:
    """One workspace; past ``deadline`` the remaining module dirs are counted, not scanned
    (``not_scanned``), newest scanned first, so a huge cache on a slow disk still yields
    the modules that matter instead of a timed-out section."""
    path = ws["path"]
    out: Dict[str, Any] = dict(ws)
    log = os.path.join(path, "flashinfer_jit.log")
    info = lstat_info(log)
    out["log"] = None if info["kind"] == "absent" else dict(info, path=log)
    ops = os.path.join(path, "cached_ops")
    out["modules"] = []
    out["locks"] = []
    out["errors"] = []
    try:
        with os.scandir(ops) as it:
            entries = sorted(it, key=lambda e: e.name)
    except FileNotFoundError:
        return out
    except OSError as err:
        out["errors"].append(f"{ops}: {_os_error(err)}")
        return out
    if deadline is not None and len(entries) > NEWEST_FIRST_OVER:
        entries = _newest_first(entries)
    for i, e in enumerate(entries):
        if deadline is not None and time.monotonic() > deadline:
            rest = [x.name for x in entries[i:] if x.name != "tmp"]
            out["not_scanned"] = {"count": len(rest), "examples": sorted(rest)[:5]}
            break
        p = os.path.join(ops, e.name)
        try:
            is_dir = e.is_dir(follow_symlinks=False)
            kind = "dir" if is_dir else file_kind(e.stat(follow_symlinks=False).st_mode)
        except OSError as err:
            out["errors"].append(f"{p}: {_os_error(err)}")
            continue
        if e.name == "tmp" and is_dir:
            out["locks"].extend(_scan_locks(p, "flock", out["errors"]))
        elif is_dir:
            out["modules"].append(scan_module(p, e.name))
        elif e.name.endswith(".lock"):
            info = lstat_info(p)
            out["locks"].append({"path": p, "module": e.name[:-5], "style": "flock-toplevel",
                                 "ino": info.get("ino"), "dev": info.get("dev"),
                                 "size": info.get("size"), "mtime": info.get("mtime")})
        elif kind == "symlink":
            target = os.path.realpath(p)
            if os.path.isdir(target):
                out["modules"].append(scan_module(p, e.name))
            else:
                out["errors"].append(f"{p}: dangling or looping symlink")
    out["modules"].sort(key=lambda m: m["name"])
    return out


def _scan_locks(tmp: str, style: str, errors: List[str]) -> List[Dict[str, Any]]:
    locks = []
    try:
        with os.scandir(tmp) as it:
            for e in it:
                if not e.name.endswith(".lock"):
                    continue
                p = os.path.join(tmp, e.name)
                info = lstat_info(p)
                locks.append({"path": p, "module": e.name[:-5], "style": style,
                              "ino": info.get("ino"), "dev": info.get("dev"),
                              "size": info.get("size"), "mtime": info.get("mtime")})
    except OSError as e:
        errors.append(f"{tmp}: {_os_error(e)}")
    return sorted(locks, key=lambda lk: lk["path"])


def gather(ctx, done) -> Dict[str, Any]:
    root = ctx.flashinfer_root
    info = lstat_info(root)
    out: Dict[str, Any] = {"root": root, "root_kind": info["kind"], "workspaces": []}
    if info["kind"] == "symlink":
        out["root_real"] = os.path.realpath(root)
    if info["kind"] in ("absent", "denied", "error"):
        return out
    deadline = time.monotonic() + SCAN_S
    out["workspaces"] = [scan_workspace(ws, deadline) for ws in discover_workspaces(root)]
    return out
