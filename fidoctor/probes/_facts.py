"""Shared views over a snapshot for probes: modules, live builders, ages.

Pure functions of the snapshot, so every probe stays replayable.
"""

from __future__ import annotations

import os
from typing import Dict, Iterator, List, Optional, Tuple

from fidoctor.model import Fix
from fidoctor.snapshot import Snapshot, sections
from fidoctor.snapshot.types import ModuleFacts, ProcessFacts, WorkspaceFacts


def workspaces(snap: Snapshot) -> List[WorkspaceFacts]:
    return sections.cache(snap).get("workspaces", [])


def target_uses(ws: WorkspaceFacts, fi: str) -> bool:
    """Whether FlashInfer ``fi`` builds into (and loads from) workspace ``ws``:
    the unversioned layout up to 0.4.0, ``<fi>/<arch>`` from 0.4.1."""
    from fidoctor.flashinfer.layout import family_of

    if family_of(fi) in ("A", "B") or fi in ("0.4.0",):
        return ws.get("version") is None
    return ws.get("version") == fi


def unused_workspaces(snap: Snapshot) -> List[str]:
    """Paths of the cache's workspaces the target's FlashInfer never loads from
    ([] when its version is unknown: then every workspace may be its own)."""
    fi = snap.data("fi_install").get("version")
    if not fi:
        return []
    return [os.path.normpath(ws["path"]) for ws in workspaces(snap) if not target_uses(ws, fi)]


def iter_modules(snap: Snapshot) -> Iterator[Tuple[WorkspaceFacts, ModuleFacts]]:
    """(workspace, module) pairs for every module dir in the cache."""
    for ws in workspaces(snap):
        for mod in ws.get("modules", []):
            yield ws, mod


def module_by_path(snap: Snapshot) -> Dict[str, ModuleFacts]:
    return {os.path.normpath(m["path"]): m for _, m in iter_modules(snap)}


def builders(snap: Snapshot, module_dir: str) -> List[ProcessFacts]:
    """Live processes working on ``module_dir`` (empty if processes were not gathered)."""
    want = os.path.normpath(module_dir)
    return [
        p for p in sections.processes(snap).get("processes", [])
        if os.path.normpath(p.get("module_dir") or "") == want and p.get("module_dir")
        and p.get("state") not in ("zombie", "gone")
    ]


def lock_holders_of(snap: Snapshot, module: str, workspace: str) -> List[int]:
    """Pids holding the flock of ``module`` in ``workspace`` (empty if locks were not gathered)."""
    ws = os.path.normpath(workspace)
    for lk in sections.locks(snap).get("locks", []):
        if lk.get("module") == module and os.path.normpath(lk.get("workspace") or "") == ws \
                and lk.get("style") != "baton":
            return list(lk.get("holders") or [])
    return []


def stale_baton(snap: Snapshot, module_dir: str) -> Optional[str]:
    """The path of ``module_dir``'s torch FileBaton (FlashInfer 0.2.0–0.2.5) when no process
    has it open: its builder died, and every later build of the module spins on it. None if
    there is none, it is open, or locks were not gathered."""
    mdir = os.path.normpath(module_dir)
    for lk in sections.locks(snap).get("locks", []):
        if lk.get("style") == "baton" and not lk.get("extension") and not lk.get("open_by") \
                and os.path.normpath(lk.get("module_dir") or "") == mdir:
            return lk.get("path")
    return None


def processes_known(snap: Snapshot) -> bool:
    s = snap.section("processes")
    return s is not None and s.ok


def age_s(snap: Snapshot, ts: Optional[float]) -> Optional[float]:
    return None if ts is None else max(0.0, snap.taken_at - ts)


def fmt_age(seconds: Optional[float]) -> str:
    if seconds is None:
        return "unknown age"
    s = int(seconds)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172800:
        return f"{s // 3600} h"
    return f"{s // 86400} days"


def so_problem(mod: ModuleFacts) -> Optional[str]:
    """Why a module has no loadable .so, or None if it has one."""
    so = mod.get("so")
    if not so:
        return "no .so"
    if so.get("kind") not in ("file", None):
        return f".so is a {so.get('kind')}"
    return so.get("problem")


def has_build_files(mod: ModuleFacts) -> bool:
    return bool(mod.get("build_ninja") or mod.get("objects") or mod.get("stale_depfiles"))


def quote(path: str) -> str:
    import shlex

    return shlex.quote(path)


def env_fix(fix_id: str, probe_id: str, var: str, value: str, description: str) -> Fix:
    """A safe fix that sets one variable for the server (an env-file fix plugin writes it):
    ``fidoctor fix --only <probe>`` first, then the export line to run by hand."""
    return Fix(id=fix_id, description=description, safety="safe",
               commands=[f"fidoctor fix --only {probe_id}",
                         f"# by hand: export {var}={quote(value)}"])
