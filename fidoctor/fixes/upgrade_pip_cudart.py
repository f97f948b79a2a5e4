"""upgrade-pip-cudart: advice only — the pip command that upgrades pip's CUDA runtime.

What: prints ``<python> -m pip install <package>==<toolkit minor>.*``; fidoctor
does not run it.
Why not automatic: a pip install cannot be undone byte-for-byte by fidoctor
(it rewrites dist-info, may pull other packages, needs the network) and it
conflicts with the exact pin torch declares, so pip reports a broken
environment and the next torch install reverts it. ``preload-cudart`` does the
same for the server process without touching the venv.
Safety: caution (as the probe grades it). Finding data read: python,
upgrade_spec, pip_version, provider_version.
"""

from __future__ import annotations

import shlex

from fidoctor.fixes import FixContext, NotApplicable, Plan
from fidoctor.fixes._cudart import require_not_older
from fidoctor.model import Finding

ID = "upgrade-pip-cudart"
SAFETY = "caution"


def plan(finding: Finding, ctx: FixContext) -> Plan:
    d = finding.data
    spec = d.get("upgrade_spec")
    if not spec:
        raise NotApplicable("no runtime version to upgrade to is known")
    want = spec.split("==", 1)[-1].rstrip(".*")
    require_not_older(want, d.get("pip_version"), spec)
    py = d.get("python") or ctx.python
    cmd = f"{shlex.quote(py)} -m pip install {shlex.quote(spec)}"
    return Plan(
        fix_id=ID, finding_id=finding.id, subject=finding.subject, safety=SAFETY, manual=True,
        why="pip's runtime is older than the toolkit's; upgrading it is a pip operation "
            "fidoctor cannot undo byte-for-byte and it conflicts with torch's pin",
        notes=[f"run yourself if you accept that: {cmd}"],
    )
