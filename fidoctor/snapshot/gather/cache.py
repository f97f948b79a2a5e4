"""The FlashInfer cache: workspaces, module dirs and lock files, in every layout.

Reads directory entries and a few bytes per file, never whole objects, so a
cache of 1,000 modules scans in tens of milliseconds. Per-directory problems
(permission denied, a symlink loop) are recorded next to the thing they hit.

At ``--level quick`` (``ctx.extra["level"] == "quick"``, fidoctor/quick.py) a
module costs one scandir and one open of its .so (fstat + 64-byte ELF head,
so a missing, empty, non-ELF or truncated .so is still named by
``cache-incomplete-module``): no build.ninja is opened, no object is stat'ed,
the module dirs are not sorted newest first, lock files are not lstat'ed
(inode from the dirent), and keys that would be empty are left out. What it
leaves out feeds only full-level probes (cache-stale-version's object times,
ninja variables, edge counts in evidence).

In a workspace of FlashInfer 0.2.6 or later (``<root>/<version>/…``: those
never leave a FileBaton in a module dir) the quick level does not even list a
module dir whose ``<name>.so`` opens as a whole ELF shared object: that one
open is the module's whole record (name, path, so, newest_mtime). Objects,
depfiles and ``.ninja_lock`` only ever explain a module *without* a loadable
.so, and such a module gets the listing above (measured: 10,000 modules'
scan 0.31 → 0.15 s of CPU; bench/bench_quick.py).
"""

from __future__ import annotations

import gc
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


def _scan_module_quick(path: str, name: str, entries: List[os.DirEntry],
                       mod: Dict[str, Any]) -> Dict[str, Any]:
    """``scan_module`` at the quick level: one scandir and one open of the .so (its ELF
    head), no build.ninja, no stat of each object.

    Keys whose value would be empty or false are left out (10,000 modules travel
    through a pipe as JSON); every probe reads them with ``.get``."""
    so_name = f"{name}.so"
    objects = 0
    sos: List[str] = []
    depfiles: List[str] = []
    so_entry = None
    for e in entries:
        n = e.name
        if n.endswith(".o"):
            objects += 1
        elif n.endswith(".so"):
            sos.append(n)
            if n == so_name or so_entry is None:
                so_entry = e if n == so_name or so_entry is None else so_entry
        elif n.endswith(".o.d"):
            depfiles.append(n)
        elif n == ".ninja_lock":
            mod["ninja_lock"] = True
        elif n == ".ninja_log":
            mod["has_ninja_log"] = True
        elif n == "build.ninja":
            mod["build_ninja"] = True
        elif n == "lock":  # torch FileBaton (FlashInfer ≤ 0.2.5)
            info = lstat_info(os.path.join(path, "lock"))
            mod["baton"] = {"path": os.path.join(path, "lock"), "mtime": info.get("mtime"),
                            "ino": info.get("ino"), "dev": info.get("dev")}
    if objects:
        mod["objects"] = objects
    if depfiles:
        mod["stale_depfiles"] = sorted(depfiles)
    if sos != [so_name]:
        mod["so_files"] = sorted(sos)
    so_entry = next((e for e in entries if e.name == so_name), so_entry)
    mod["so"] = None
    newest = 0.0
    if so_entry is not None:
        so_path = path + "/" + so_entry.name
        # The 64-byte ELF head, in the one open that also stats it: a link killed mid-write
        # leaves a .so of any size whose section table ends past its end, which only the
        # head shows (measured: 0.3 s of 10,000 modules' 0.8 s; bench/bench_quick.py).
        got = stat_and_head(so_path, 64)
        if got:
            st = got[0]
            mod["so"] = {"path": so_path, "kind": "file", "size": st.st_size,
                         "mtime": st.st_mtime, "problem": elf_head_problem(got[1], st.st_size)}
            newest = st.st_mtime
        else:  # a symlink, odd file or unreadable: the full scan's careful path
            info = lstat_info(so_path)
            if info["kind"] == "symlink":
                info = dict(lstat_info(os.path.realpath(so_path)), symlink=True)
            mod["so"] = {"path": so_path, "kind": info.get("kind"), "size": info.get("size"),
                         "mtime": info.get("mtime"), "problem": elf_header_problem(so_path)}
            newest = info.get("mtime") or 0.0
    if not mod["so"]:  # a build in flight or a dead one (few): its newest file
        newest = max([newest, *map(_mtime, entries)])
    if newest:
        mod["newest_mtime"] = newest
    return mod


def _loadable_so_only(path: str, name: str) -> Optional[Dict[str, Any]]:
    """The quick record of a module whose ``<name>.so`` is a regular file with a whole ELF
    shared-object head, in one open; None when it is anything else (then list the dir)."""
    so_path = path + "/" + name + ".so"
    got = stat_and_head(so_path, 64)
    if not got or elf_head_problem(got[1], got[0].st_size) is not None:
        return None
    st = got[0]
    return {"name": name, "path": path, "so": {"path": so_path, "kind": "file",
                                               "size": st.st_size, "mtime": st.st_mtime,
                                               "problem": None},
            "newest_mtime": st.st_mtime}


def _without_batons(version: Optional[str]) -> bool:
    """FlashInfer 0.2.6+ locks with filelock under ``tmp/``, never a FileBaton in a module
    dir (only those releases write a ``<version>/`` dir at all: 0.4.1+)."""
    m = re.match(r"(\d+)\.(\d+)\.(\d+)", version or "")
    return m is not None and tuple(int(x) for x in m.groups()) >= (0, 2, 6)


def scan_module(path: str, name: str, quick: bool = False) -> Dict[str, Any]:
    """Facts about one ``cached_ops/<name>/`` directory (``quick``: see the module doc)."""
    mod: Dict[str, Any] = {"name": name, "path": path}
    try:
        with os.scandir(path) as it:
            entries = list(it)
    except OSError as err:
        mod["error"] = _os_error(err)
        return mod
    if quick:
        return _scan_module_quick(path, name, entries, mod)
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
        newest = max([newest, *map(_mtime, entries)])
    mod["newest_mtime"] = newest or None
    return mod


def _mtime(e: os.DirEntry) -> float:
    """An entry's own mtime (not its link target's); 0.0 when it vanished meanwhile."""
    try:
        return e.stat(follow_symlinks=False).st_mtime
    except OSError:
        return 0.0


def _newest_first(entries: List[os.DirEntry]) -> List[os.DirEntry]:
    """Module dirs by mtime, newest first: under a tight budget the build of now comes first."""
    return sorted(entries, key=_mtime, reverse=True)


def scan_workspace(ws: Dict[str, Any], deadline: Optional[float] = None,
                   quick: bool = False) -> Dict[str, Any]:
    """One workspace; past ``deadline`` the remaining module dirs are counted, not scanned
    (``not_scanned``), newest scanned first, so a huge cache on a slow disk still yields
    the modules that matter instead of a timed-out section. Over SPLIT_OVER module dirs
    on more than one core, half of them are scanned by a helper process (``_in_two``)."""
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
    if deadline is not None and len(entries) > NEWEST_FIRST_OVER and not quick:
        entries = _newest_first(entries)
    one_open = quick and _without_batons(ws.get("version"))
    if len(entries) > SPLIT_OVER and _cores() > 1:
        _in_two(ops, entries, deadline, quick, one_open, out)
    else:
        _scan_entries(ops, entries, deadline, quick, one_open, out)
    out["modules"].sort(key=lambda m: m["name"])
    return out


SPLIT_OVER = 2000  # module dirs; below this a second process costs more than it saves


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _scan_entries(ops: str, entries: List[os.DirEntry], deadline: Optional[float],
                  quick: bool, one_open: bool, out: Dict[str, Any]) -> None:
    """Scan ``entries`` of ``ops`` into ``out``'s modules, locks, errors (and
    ``not_scanned`` past the deadline)."""
    for i, e in enumerate(entries):
        if deadline is not None and time.monotonic() > deadline:
            rest = [x.name for x in entries[i:] if x.name != "tmp"]
            out["not_scanned"] = {"count": len(rest), "examples": sorted(rest)[:5]}
            break
        p = ops + "/" + e.name  # os.path.join costs 10 µs × 10,000 modules
        try:
            is_dir = e.is_dir(follow_symlinks=False)
            kind = "dir" if is_dir else file_kind(e.stat(follow_symlinks=False).st_mode)
        except OSError as err:
            out["errors"].append(f"{p}: {_os_error(err)}")
            continue
        if e.name == "tmp" and is_dir:
            out["locks"].extend(_scan_locks(p, "flock", out["errors"], quick))
        elif is_dir:
            out["modules"].append((one_open and _loadable_so_only(p, e.name))
                                  or scan_module(p, e.name, quick))
        elif e.name.endswith(".lock"):
            info = lstat_info(p)
            out["locks"].append({"path": p, "module": e.name[:-5], "style": "flock-toplevel",
                                 "ino": info.get("ino"), "dev": info.get("dev"),
                                 "size": info.get("size"), "mtime": info.get("mtime")})
        elif kind == "symlink":
            target = os.path.realpath(p)
            if os.path.isdir(target):
                out["modules"].append(scan_module(p, e.name, quick))
            else:
                out["errors"].append(f"{p}: dangling or looping symlink")


def _in_two(ops: str, entries: List[os.DirEntry], deadline: Optional[float], quick: bool,
            one_open: bool, out: Dict[str, Any]) -> None:
    """Scan every other entry in a forked helper while this process scans the rest.

    Why: the scan is a syscall or two per file (10,000 modules: 0.6 s of CPU at the full
    level, the longest link of diagnose's chain), and the other core is otherwise idle
    while it runs. The helper is in this gatherer's process group, so the runner's
    timeout kills it too; it sends its part with marshal (a fork of this interpreter).
    If it fails, this process scans its half as well. Newest-first order is kept in both
    halves, so a deadline still cuts the oldest modules.
    """
    import marshal

    mine, theirs = entries[0::2], entries[1::2]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the helper
        try:
            gc.disable()  # short-lived: a collection would only copy shared pages
            os.close(r)
            part: Dict[str, Any] = {"modules": [], "locks": [], "errors": []}
            _scan_entries(ops, theirs, deadline, quick, one_open, part)
            view = memoryview(marshal.dumps(part))
            while view:
                view = view[os.write(w, view):]
        finally:
            os._exit(0)
    os.close(w)
    _scan_entries(ops, mine, deadline, quick, one_open, out)
    chunks = []
    with os.fdopen(r, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            chunks.append(b)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
    try:
        got = marshal.loads(b"".join(chunks))
    except (EOFError, ValueError, TypeError):
        got = None
    if not isinstance(got, dict):
        got = {"modules": [], "locks": [], "errors": []}
        _scan_entries(ops, theirs, deadline, quick, one_open, got)
    out["modules"] += got["modules"]
    out["locks"] = sorted(out["locks"] + got["locks"], key=lambda lk: lk["path"])
    out["errors"] += got["errors"]
    skipped = [x for x in (out.get("not_scanned"), got.get("not_scanned")) if x]
    if skipped:
        out["not_scanned"] = {"count": sum(x["count"] for x in skipped),
                              "examples": sorted(n for x in skipped for n in x["examples"])[:5]}


def _scan_locks(tmp: str, style: str, errors: List[str],
                quick: bool = False) -> List[Dict[str, Any]]:
    """Lock files in ``tmp``; ``quick``: inode from the dirent and the dir's device, no lstat
    per file (what /proc/locks is matched on), so no size or mtime."""
    locks = []
    try:
        dev = os.stat(tmp).st_dev if quick else None
        with os.scandir(tmp) as it:
            for e in it:
                if not e.name.endswith(".lock"):
                    continue
                p = tmp + "/" + e.name
                info = ({"ino": e.inode(), "dev": dev} if quick and e.is_file(follow_symlinks=False)
                        else lstat_info(p))
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
    if info["kind"] == "error":
        out["root_error"] = info.get("error")
    if info["kind"] in ("absent", "denied", "error"):
        return out
    deadline = time.monotonic() + SCAN_S
    quick = (getattr(ctx, "extra", None) or {}).get("level") == "quick"
    out["workspaces"] = [scan_workspace(ws, deadline, quick) for ws in discover_workspaces(root)]
    return out
