"""Shared views for the toolchain probes (nvcc archs and flags, debug flags, host compiler).

Pure functions of the snapshot's ``toolchain``, ``toolkit`` and ``target`` sections.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Tuple

from fidoctor.model import Fix
from fidoctor.probes._facts import quote
from fidoctor.snapshot import Snapshot


def toolchain(snap: Snapshot) -> Dict[str, Any]:
    return snap.data("toolchain")


def toolkit(snap: Snapshot) -> Dict[str, Any]:
    return (snap.data("toolkit").get("toolkit") or {})


def cuda_version(snap: Snapshot) -> Optional[str]:
    return toolkit(snap).get("version")


def vtuple(v: Optional[str]) -> Optional[Tuple[int, int]]:
    m = re.match(r"(\d+)\.(\d+)", v or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def flashinfer_version(snap: Snapshot) -> Optional[str]:
    pkgs = snap.data("target").get("packages") or {}
    for n in ("flashinfer-python", "flashinfer"):
        if n in pkgs:
            return pkgs[n].get("version")
    return None


def fi_modules(snap: Snapshot) -> Dict[str, Dict[str, Any]]:
    """Cached modules whose build.ninja this FlashInfer wrote (its version's workspace; the
    unversioned layout only for FlashInfer < 0.4.1, which builds there; any workspace when
    the target's version is unknown)."""
    from fidoctor.flashinfer.layout import family_of

    fi = flashinfer_version(snap)
    mods = toolchain(snap).get("modules") or {}
    unversioned = not fi or family_of(fi) in (None, "A", "B") or fi == "0.4.0"
    return {n: m for n, m in mods.items()
            if not fi or (m["workspace_version"] == fi if m.get("workspace_version")
                          else unversioned)}


def newer_toolkits(snap: Snapshot, need: Tuple[int, int]) -> List[Dict[str, Any]]:
    """Installed toolkits (``/usr/local/cuda-*``) with nvcc whose version is at least ``need``."""
    here = toolkit(snap).get("path")
    out = []
    for t in snap.data("toolkit").get("installed") or []:
        v = vtuple(t.get("version"))
        if t.get("has_nvcc") and t["path"] != here and v is not None and v >= need:
            out.append(t)
    return sorted(out, key=lambda t: vtuple(t.get("version")) or (0, 0))


def newer_toolkit_fixes(cands: List[Dict[str, Any]]) -> List[Fix]:
    """``cuda-home-advice`` for the newest of ``newer_toolkits`` (none when there is none)."""
    if not cands:
        return []
    c = cands[-1]
    return [Fix(id="cuda-home-advice", safety="caution",
                description=f"Build with the newer toolkit {c['path']} (CUDA "
                f"{c.get('version')}); check its runtime against torch's first",
                commands=[f"export CUDA_HOME={quote(c['path'])}"])]
