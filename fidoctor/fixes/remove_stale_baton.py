"""remove-stale-baton: take a stale torch FileBaton lock out of the way (moved, not deleted).

What: moves ``cached_ops/<name>/lock`` (FlashInfer ≤0.2.5's torch FileBaton)
into the quarantine next to the workspace, one rename on the same file system.
Why: FileBaton waiters spin ``while os.path.exists(lock)`` with no timeout; a
build killed mid-way leaves the file and every later start hangs forever.
Safety: safe when nothing has it open — re-checked in /proc/*/fd right
before the rename (a live holder keeps its fd open); refused otherwise.
Undo: ``fidoctor undo`` moves it back. Finding data read: lock_path,
module_dir, module, style.
"""

from __future__ import annotations

import os

from fidoctor.fixes import FixContext, NotApplicable, Plan
from fidoctor.model import Finding
from fidoctor.paths import quarantine_dir
from fidoctor.txn.safety import fingerprint, open_by
from fidoctor.txn.steps import MoveAside

ID = "remove-stale-baton"
SAFETY = "safe"


def plan(finding: Finding, ctx: FixContext) -> Plan:
    d = finding.data
    lock = d.get("lock_path")
    if not lock or not os.path.lexists(lock):
        raise NotApplicable("the lock file is already gone")
    if d.get("style") not in (None, "baton"):
        raise NotApplicable("only a torch FileBaton is removed; a flock is released by the "
                            "kernel when its holder exits")
    holders = open_by(lock)
    if holders:
        raise NotApplicable(f"pid {', '.join(map(str, holders))} has it open now")
    mod_dir = d.get("module_dir") or os.path.dirname(lock)
    ws = os.path.dirname(os.path.dirname(os.path.normpath(mod_dir)))
    name = d.get("module") or os.path.basename(mod_dir)
    dst = os.path.join(quarantine_dir(mod_dir, ctx.txid), f"{name}.baton-lock")
    step = MoveAside(src=lock, dst=dst, root=ws, fp=fingerprint(lock), require_closed=True)
    return Plan(
        fix_id=ID, finding_id=finding.id, subject=finding.subject, safety=SAFETY,
        why="no process has the baton open, so no build owns it; waiters spin on it forever "
            "until it is gone",
        steps=[step], modules=[mod_dir],
    )
