"""set-max-jobs: cap parallel compile jobs (``MAX_JOBS``) so a build fits in host memory.

What: writes ``MAX_JOBS=<n>`` (the finding's ``max_jobs``) into fidoctor's env
file and prints the export line; FlashInfer passes it to ninja as ``-j``.
Why: each CUTLASS compile job peaks at several GB; nproc+2 of them can OOM the
host (FlashInfer#3634), killing cicc and leaving half-built modules.
Safety: safe. It takes effect on the next build: a build running now keeps
its ``-j``, so the finding may persist until that build ends.
Undo: ``fidoctor undo`` takes the env file back. Finding data read: max_jobs.
"""

from __future__ import annotations

from fidoctor.fixes import FixContext, NotApplicable, Plan
from fidoctor.fixes._envfile import env_plan
from fidoctor.model import Finding

ID = "set-max-jobs"
SAFETY = "safe"


def plan(finding: Finding, ctx: FixContext) -> Plan:
    n = finding.data.get("max_jobs")
    if not isinstance(n, int) or n < 1:
        raise NotApplicable("the finding gives no job count")
    return env_plan(finding, ID, SAFETY,
                    f"the live build may need more memory than is available; {n} job(s) fit",
                    {"MAX_JOBS": str(n)},
                    ["takes effect on the next build; a build running now keeps its -j"])
