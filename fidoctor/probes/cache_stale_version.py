"""cache-stale-version: cached modules that another FlashInfer install built.

What: in the workspace the target uses, modules whose ``.so`` is older than
the installed flashinfer-python (its dist-info ``RECORD``: the install time),
and modules whose objects straddle that install (some compiled before it,
some after: a ``.so`` linked from a mix). Workspaces the target no longer
uses (the unversioned layout of FlashInfer < 0.4.1, other versions' dirs)
are reported as info: they cost disk, not correctness.
Why: after ``pip install --force-reinstall`` (or an upgrade within the
unversioned layout of ≤ 0.4.0) ninja's mtime check recompiles only some
objects and relinks old and new together: ``cutlass_fused_moe`` "deadlocks at
launch" (FlashInfer#4489). The cache key is only ``<version>/<arch>``.
Fix: move the affected workspace aside and rebuild it (``fidoctor warmup``);
remove the leftover dirs of other versions.
"""

from __future__ import annotations

import os
import time
from typing import Iterable, List

from fidoctor.model import Finding, Fix
from fidoctor.probes._facts import quote, so_problem, target_uses, workspaces
from fidoctor.snapshot import Snapshot
from fidoctor.snapshot.types import WorkspaceFacts

ID = "cache-stale-version"
REQUIRES = ("cache", "fi_install")
SLACK_S = 2.0


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def check(snap: Snapshot) -> Iterable[Finding]:
    inst = snap.data("fi_install")
    fi = inst.get("version")
    if not fi:
        return
    installed = (inst.get("record") or {}).get("mtime")
    unused: List[WorkspaceFacts] = []
    for ws in workspaces(snap):
        mods = [m for m in ws.get("modules", []) if not m.get("error")]
        if not target_uses(ws, fi):
            if mods:
                unused.append(ws)
            continue
        if installed is None:
            continue
        older, mixed = [], []
        for m in mods:
            so = m.get("so") or {}
            if so_problem(m) is None and so.get("mtime") and so["mtime"] < installed - SLACK_S:
                older.append(m)
            om = m.get("objects_mtime")
            if om and om[0] < installed - SLACK_S < installed + SLACK_S < om[1]:
                mixed.append(m)
        if not older and not mixed:
            continue
        evidence = [f"flashinfer-python {fi} installed at {_when(installed)} "
                    f"({inst['record']['path']} mtime)"]
        for m in mixed[:3]:
            evidence.append(f"{m['path']}: objects from {_when(m['objects_mtime'][0])} and "
                            f"{_when(m['objects_mtime'][1])}, around the install: a .so linked "
                            "from a mix")
        for m in older[:3]:
            evidence.append(f"{m['path']}: .so built {_when((m.get('so') or {}).get('mtime') or 0)}, "
                            "before the install")
        n = len({m["path"] for m in older + mixed})
        stale = f"{ws['path']}.stale"
        yield Finding(
            id=ID, severity="warning", subject=ws["path"],
            title=(f"{len(mixed)} module(s) mix objects from before and after the reinstall of "
                   f"flashinfer-python {fi}" if mixed else
                   f"{n} cached module(s) were built before flashinfer-python {fi} was installed"),
            evidence=evidence,
            fixes=[Fix(description="Move this workspace aside and rebuild it from the installed "
                       "sources (the old one stays until you delete it)",
                       commands=[f"mv {quote(ws['path'])} {quote(stale)}", "fidoctor warmup"],
                       safety="caution")],
            data={"workspace": ws["path"], "modules": sorted({m["name"] for m in older + mixed}),
                  "mixed": [m["name"] for m in mixed], "installed_at": installed})
    if unused:
        n = sum(len(ws.get("modules", [])) for ws in unused)
        yield Finding(
            id=ID, severity="info", subject=os.path.commonpath([ws["path"] for ws in unused]),
            title=f"{n} module(s) in {len(unused)} workspace(s) of other FlashInfer versions "
            f"(the target has {fi} and does not use them)",
            evidence=[f"{ws['path']}: {ws.get('version') or 'unversioned layout (< 0.4.1)'}, "
                      f"{len(ws.get('modules', []))} module(s)" for ws in unused[:5]],
            fixes=[Fix(description="Remove them to free disk (nothing the target uses)",
                       commands=[f"rm -rf {quote(ws['path'])}" for ws in unused[:5]],
                       safety="caution")],
            data={"workspaces": [ws["path"] for ws in unused], "modules": n})
