"""quarantine-module: move one FlashInfer module dir aside so the next start rebuilds it.

What: renames ``<workspace>/cached_ops/<name>`` to
``<workspace>/fidoctor-quarantine/<txid>/<name>`` — one atomic rename on the
same file system; nothing is copied or deleted, and the rest of the cache
stays warm (unlike the usual ``rm -rf ~/.cache/flashinfer``).
Why: a half-built or truncated module fails at load (``invalid ELF header``)
or confuses ninja; FlashInfer rebuilds a missing module dir from scratch.
Safety: safe. Refused when the dir changed since the plan (a build may have
started), when a symlink leads out of the workspace, or when the workspace
is not writable. ``fidoctor undo`` renames it back, byte-for-byte (sha256 of
every file is recorded before the move and checked after).
Finding data read: ``module_dir`` (required), ``workspace`` (optional).
"""

from __future__ import annotations

import os

from fidoctor.fixes import FixContext, NotApplicable, Plan
from fidoctor.model import Finding
from fidoctor.txn.steps import quarantine_step

ID = "quarantine-module"
SAFETY = "safe"


# Findings where moving the module aside would only rebuild the same broken thing.
NOT_ALONE = {
    "cudart-missing-symbol": "rebuilt with the same toolkit it would need the same symbol; "
                             "change the runtime or toolkit first",
    "cuda-toolkit-unusable": "it would be rebuilt with the same unusable toolkit; set CUDA_HOME "
                             "first",
}


def plan(finding: Finding, ctx: FixContext) -> Plan:
    if finding.id in NOT_ALONE:
        raise NotApplicable(NOT_ALONE[finding.id])
    mod = finding.data.get("module_dir")
    if not mod:
        raise NotApplicable("the finding names no module_dir")
    mod = os.path.normpath(mod)
    if not os.path.lexists(mod):
        raise NotApplicable(f"{mod} is already gone")
    ws = finding.data.get("workspace") or os.path.dirname(os.path.dirname(mod))
    step = quarantine_step(mod, ctx.txid, ws)
    return Plan(
        fix_id=ID, finding_id=finding.id, subject=finding.subject or mod, safety=SAFETY,
        why=f"{os.path.basename(mod)} has no loadable .so "
            f"({finding.data.get('problem', 'incomplete')}); moving just this module aside "
            "makes the next start rebuild it while the rest of the cache stays warm",
        steps=[step], modules=[mod],
    )
