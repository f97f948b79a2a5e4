"""replace-pip-cudart: copy the toolkit's libcudart over pip's (the seed users' fix) — risky.

What: replaces ``site-packages/nvidia/cuda_runtime/lib/libcudart.so.12`` with
the provider's bytes through a same-directory temp file, fsync and
``os.replace``, after backing the original up in the fix's journal.
Why: then every process of that venv loads a runtime that has the symbols.
Safety: risky, and never chosen before ``preload-cudart`` unless asked for
(``fidoctor fix --use replace-pip-cudart``): pip's RECORD hash no longer
matches, and ``pip install --force-reinstall`` (or reinstalling torch)
silently puts the old file back. Refused when the provider is older than
pip's copy or either version is unknown, and when the target is a symlink.
Undo: ``fidoctor undo`` restores the original bytes, mode and mtime (sha256
checked); it refuses to overwrite a file that changed after the fix.
Finding data read: pip_cudart_path, pip_version, pip_package, provider_path,
provider_version.
"""

from __future__ import annotations

import os

from fidoctor.fixes import FixContext, NotApplicable, Plan
from fidoctor.fixes._cudart import provider, require_not_older, restart_notes
from fidoctor.model import Finding
from fidoctor.txn.safety import sha256_or_none
from fidoctor.txn.steps import PutFile

ID = "replace-pip-cudart"
SAFETY = "risky"


def plan(finding: Finding, ctx: FixContext) -> Plan:
    d = finding.data
    prov = os.path.realpath(provider(d))  # the bytes to copy: follow the toolkit's own links
    pip = d.get("pip_cudart_path")
    if not pip or not os.path.lexists(pip):
        raise NotApplicable("the target has no pip libcudart to replace")
    if os.path.islink(pip):
        raise NotApplicable(f"{pip} is a symlink; fidoctor will not replace through it")
    require_not_older(d.get("provider_version"), d.get("pip_version"), prov)
    old, new = sha256_or_none(pip), sha256_or_none(prov)
    if old is None or new is None:
        raise NotApplicable(f"cannot read {pip if old is None else prov}")
    if old == new:
        raise NotApplicable(f"{pip} already has the same bytes as {prov}")
    pkg = d.get("pip_package") or "nvidia-cuda-runtime-cu12"
    step = PutFile(path=pip, root=os.path.dirname(pip), new_sha=new, old_sha=old, source=prov)
    notes = [f"WARNING: pip install --force-reinstall {pkg} (or reinstalling torch) silently "
             "reverts this copy, and pip's RECORD hash for the file no longer matches",
             *restart_notes(d, ctx)]
    return Plan(
        fix_id=ID, finding_id=finding.id, subject=finding.subject, safety=SAFETY,
        why=f"pip's libcudart ({d.get('pip_version')}) lacks symbols the modules need; the "
            f"toolkit's ({d.get('provider_version')}) has them. The original is backed up.",
        steps=[step], notes=notes,
        modules=[d["module_dir"]] if d.get("module_dir") else [],
    )
