"""ELF facts of every cached module ``.so`` the ``cache`` section found.

Per module: NEEDED, SONAME, RPATH/RUNPATH and the CUDA-runtime symbols it
leaves undefined, with their version requirement (``.gnu.version_r``). Facts
come from fidoctor's on-disk fact cache when the file is unchanged (same
size, mtime, inode, device), so a warm run of 1,000 modules reads no ELF.
A truncated or non-ELF file is recorded with its reason, never raised.
"""

from __future__ import annotations

import os
from typing import Any, Dict

from fidoctor.elf import FactCache

NAME = "elf"
BUDGET_S = 15.0
ORDER = 6
REQUIRES = ("cache",)


def gather(ctx, done) -> Dict[str, Any]:
    cache_sec = done.get("cache")
    cache = cache_sec.data if cache_sec is not None and cache_sec.ok else {}
    facts = FactCache()
    modules: Dict[str, Any] = {}
    for ws in cache.get("workspaces", []):
        for mod in ws.get("modules", []):
            so = mod.get("so") or {}
            path = so.get("path")
            if not path:
                continue
            f = facts.facts(path)
            entry: Dict[str, Any] = {"module": mod.get("name"), "module_dir": mod.get("path")}
            if "error" in f:
                entry["error"] = f["error"]
            else:
                entry.update({k: f[k] for k in ("soname", "needed", "rpath", "runpath",
                                                "undefined")})
            modules[os.path.normpath(path)] = entry
    save_error = facts.save()
    out: Dict[str, Any] = {"modules": modules,
                           "fact_cache": {"path": facts.path, "hits": facts.hits,
                                          "misses": facts.misses}}
    for err in (facts.load_error, save_error):
        if err:
            out["fact_cache"].setdefault("errors", []).append(err)
    return out
