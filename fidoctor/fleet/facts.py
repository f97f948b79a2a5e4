"""What one node tells the fleet: its name, versions, cache mount and warm modules.

Why one function for both inputs: ``fidoctor fleet`` reads either a node's
``diagnose --json`` (which carries this object as ``node``) or a raw snapshot
(replayed through the probes, then this same function). The cross-node
findings (``fleet-shared-cache``, ``fleet-version-drift``, stragglers) judge
only these facts, so both inputs are judged alike.

Data contract (``diagnose --json``'s ``node``; never renamed, add keys instead):
  hostname: the node's host name as the snapshot recorded it (a ``<host-N>``
            placeholder in a redacted snapshot), or None
  versions: {flashinfer, torch, torch_cuda, cuda_runtime, toolkit, driver, cuda_home,
             arch_dirs: ["<flashinfer version>/<arch>", …]}; a value is None when
             not gathered
  cache: {root, fstype, source, mount_point, root_in_fs (the mount's root in its
          filesystem joined with the cache root's path below the mount point),
          network, options, fsid} or None when the fs section is missing
  modules: {warm: [names], cold: [names], truncated: bool}, names as
           ``<version>/<arch>/<module>``; at most MAX_MODULES of each
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, cast

from fidoctor.snapshot import Snapshot
from fidoctor.snapshot.types import ModuleFacts

MAX_MODULES = 5000


def _str(v: Any) -> Optional[str]:
    return v if isinstance(v, str) and v else None


def _d(v: Any) -> Dict[str, Any]:
    return v if isinstance(v, dict) else {}


def hostname(snap: Snapshot) -> Optional[str]:
    return _str(snap.data("host").get("hostname"))


def versions(snap: Snapshot) -> Dict[str, Any]:
    from fidoctor.diagnosis import _shaped, target_summary

    t = _shaped(target_summary, snap) or {}
    tk = snap.data("toolkit")
    gpu = snap.data("gpu")
    res = _d(tk.get("resolution"))
    cuda_home = _str(res.get("value")) or _str(_d(snap.context.get("env")).get("CUDA_HOME"))
    arch = sorted({f"{ws.get('version')}/{ws.get('arch')}"
                   for ws in snap.data("cache").get("workspaces") or [] if isinstance(ws, dict)})
    return {
        "flashinfer": _str(t.get("flashinfer")), "torch": _str(t.get("torch")),
        "torch_cuda": _str(t.get("torch_cuda")), "cuda_runtime": _str(t.get("cuda_runtime")),
        "toolkit": _str(_d(tk.get("toolkit")).get("version")),
        "driver": _str(gpu.get("driver_version")), "cuda_home": cuda_home,
        "arch_dirs": arch,
    }


def cache_mount(snap: Snapshot) -> Optional[Dict[str, Any]]:
    """The mount holding the cache root, and where the root lies in that filesystem."""
    fs = snap.data("fs")
    root = next((p for p in fs.get("places") or [] if isinstance(p, dict)
                 and p.get("role") == "root"), None)
    if root is None:
        return None
    m = _d(_d(fs.get("mounts")).get(str(root.get("mount_id"))))
    if not m:
        return None
    path = str(root.get("path") or "")
    mp = str(m.get("mount_point") or "/")
    rel = os.path.relpath(path, mp) if path.startswith(mp) else path
    in_fs = os.path.normpath(os.path.join(str(m.get("root") or "/"), rel))
    opts = list(dict.fromkeys(list(m.get("options") or []) + list(m.get("super_options") or [])))
    fsid = _d(m.get("statvfs")).get("fsid")
    return {"root": path, "fstype": m.get("fstype"), "source": m.get("source"),
            "mount_point": mp, "root_in_fs": in_fs, "network": bool(m.get("network")),
            "options": opts, "fsid": fsid if isinstance(fsid, int) else None}


def modules(snap: Snapshot) -> Dict[str, Any]:
    from fidoctor.probes._facts import so_problem

    warm: List[str] = []
    cold: List[str] = []
    truncated = False
    for ws in snap.data("cache").get("workspaces") or []:
        if not isinstance(ws, dict):
            continue
        pre = f"{ws.get('version')}/{ws.get('arch')}/"
        for mod in ws.get("modules") or []:
            if not isinstance(mod, dict) or mod.get("error"):
                continue
            into = cold if so_problem(cast(ModuleFacts, mod)) else warm
            if len(into) >= MAX_MODULES:
                truncated = True
                continue
            into.append(pre + str(mod.get("name")))
    return {"warm": sorted(warm), "cold": sorted(cold), "truncated": truncated}


def node_facts(snap: Snapshot) -> Dict[str, Any]:
    """The ``node`` object of ``diagnose --json`` (see the data contract above)."""
    out: Dict[str, Any] = {"hostname": hostname(snap)}
    for key, fn in (("versions", versions), ("cache", cache_mount), ("modules", modules)):
        try:
            out[key] = fn(snap)
        except (TypeError, AttributeError, ValueError, KeyError):
            out[key] = None  # a damaged snapshot: these facts are unknown, not empty
    return out
