"""The filesystems FlashInfer writes to, as the target sees them: who, where, how much room.

Feeds cache-not-writable, disk-space-low and cache-on-network-fs. With
``--pid`` the identity is the server's (``/proc/PID/status``) and the mounts
are its namespace's (``/proc/PID/mountinfo``); without it, ours. Reads stat
and statvfs only (a blocked ``statvfs`` on a dead mount is cut by the budget
like any gatherer).

Data contract (``data``; never renamed, add keys instead):
  identity: {uid, gid, groups, source}
  mountinfo: the file read
  places: [{role, path, exists, kind, uid, gid, mode, nearest (the nearest existing
           ancestor when absent, with its uid/gid/mode), ancestors: [{path, uid, gid, mode}]
           (root first, for search permission), mount_id}]
     roles: "root" (the cache root), "workspace", "cached_ops", "locks" (cached_ops/tmp),
            "log" (flashinfer_jit.log), "module" (a module dir that must be rebuilt),
            "tmpdir" (the target's TMPDIR, else /tmp), "candidate" (a node-local base
            a fix could move the workspace to: /var/tmp, /tmp)
  mounts: {mount_id (str): {mount_point, fstype, source, options, super_options, ro,
           network, statvfs: {avail_bytes, total_bytes, favail, files, rdonly, …}}}
"""

from __future__ import annotations

import os
from typing import Any, Dict, List

from fidoctor.mounts import (
    identity,
    is_network,
    mount_of,
    nearest_existing,
    owner_mode,
    read_mountinfo,
    statvfs,
)

NAME = "fs"
BUDGET_S = 5.0
ORDER = 6
REQUIRES = ("cache",)
MAX_MODULES = 20


def _place(role: str, path: str) -> Dict[str, Any]:
    out: Dict[str, Any] = dict(owner_mode(path), role=role)
    near = path if out.get("exists") else nearest_existing(path)
    if not out.get("exists"):
        out["nearest"] = owner_mode(near)
    chain: List[Dict[str, Any]] = []
    p = os.path.dirname(os.path.abspath(near))
    while True:
        chain.append(owner_mode(p))
        if p == "/":
            break
        p = os.path.dirname(p)
    out["ancestors"] = list(reversed(chain))
    out["probe_path"] = near
    return out


def gather(ctx, done) -> Dict[str, Any]:
    ident = identity(ctx.pid)
    mounts, src = read_mountinfo(ctx.pid)
    cache = done["cache"].data if "cache" in done and done["cache"].ok else {}
    if "cache" not in done:  # --level quick runs fs beside the cache scan: workspaces only
        from fidoctor.flashinfer.layout import discover_workspaces

        cache = {"workspaces": discover_workspaces(ctx.flashinfer_root)}
    places: List[Dict[str, Any]] = [_place("root", ctx.flashinfer_root)]
    modules = 0
    for ws in cache.get("workspaces", []):
        w = ws["path"]
        places.append(_place("workspace", w))
        places.append(_place("cached_ops", os.path.join(w, "cached_ops")))
        places.append(_place("locks", os.path.join(w, "cached_ops", "tmp")))
        places.append(_place("log", os.path.join(w, "flashinfer_jit.log")))
        for m in ws.get("modules", []):
            if modules < MAX_MODULES and not m.get("so") and not m.get("error"):
                places.append(_place("module", m["path"]))
                modules += 1
    tmp = ctx.env.get("TMPDIR") or "/tmp"
    places.append(_place("tmpdir", tmp))
    uid = ident.get("uid", os.geteuid())
    for base in ("/var/tmp", "/tmp"):
        places.append(_place("candidate", os.path.join(base, f"flashinfer-{uid}")))
    out_mounts: Dict[str, Any] = {}
    for pl in places:
        m = mount_of(pl["probe_path"], mounts) if mounts else None
        if m is None:
            continue
        key = str(m["mount_id"])
        pl["mount_id"] = key
        if key not in out_mounts:
            out_mounts[key] = dict(m, network=is_network(m["fstype"]),
                                   statvfs=statvfs(pl["probe_path"]))
    return {"identity": ident, "mountinfo": src, "places": places, "mounts": out_mounts,
            "tmpdir_source": "TMPDIR" if ctx.env.get("TMPDIR") else "default /tmp"}
