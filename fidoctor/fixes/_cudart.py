"""Shared checks for the libcudart fixes: which runtime is newer, and what to tell the user."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from fidoctor.fixes import FixContext, NotApplicable


def version_key(v: Optional[str]) -> Optional[tuple]:
    if not v:
        return None
    try:
        from packaging.version import InvalidVersion, Version

        return (Version(v).release,)
    except (ImportError, InvalidVersion):
        return None


def require_not_older(new: Optional[str], old: Optional[str], what: str) -> None:
    """Refuse to put a runtime in place of a newer one, or when either version is unknown."""
    nk, ok = version_key(new), version_key(old)
    if nk is None or ok is None:
        raise NotApplicable(f"cannot tell whether {what} ({new or '?'}) is at least the "
                            f"runtime it replaces ({old or '?'})")
    if nk < ok:
        raise NotApplicable(f"{what} ({new}) is older than the runtime it would replace "
                            f"({old}); fidoctor never replaces a runtime with an older one")


def provider(data: Dict[str, Any]) -> str:
    prov = data.get("provider_path")
    if not prov:
        raise NotApplicable("no libcudart on this machine exports the missing symbols")
    if not os.path.isfile(prov):
        raise NotApplicable(f"{prov} no longer exists")
    return prov


def restart_notes(data: Dict[str, Any], ctx: FixContext) -> List[str]:
    notes = ["a running process keeps the libcudart it already mapped: restart the server "
             "for this to take effect"]
    if ctx.pid:
        notes.append(f"pid {ctx.pid} must be restarted (with the environment below)")
    v = data.get("provider_version")
    if v:
        notes.append(f"the driver must support CUDA {v} (nvidia-smi shows the highest it does)")
    return notes
