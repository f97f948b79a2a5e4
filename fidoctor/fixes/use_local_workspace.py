"""use-local-workspace: build FlashInfer's cache on a node-local dir the server may write.

What: writes ``FLASHINFER_WORKSPACE_BASE=<dir>`` (the finding's
``workspace_base``: a dir on a local, writable filesystem with room, which
the probe checked for the server's uid) into fidoctor's env file; FlashInfer
then keeps its cache in ``<dir>/.cache/flashinfer``.
Why: a read-only or foreign-owned cache fails every build, and a cache on a
network filesystem shares locks and mtimes badly between nodes (FlashInfer
PR#993, TensorRT-LLM PR#17810 uses a node-local base the same way).
Safety: safe. Nothing is moved or deleted; the old cache stays where it is.
The cost: the new cache is cold, so the next start compiles its modules
(``fidoctor warmup`` does that ahead of time).
Undo: ``fidoctor undo`` takes the env file back. Finding data read: workspace_base.
"""

from __future__ import annotations

import os

from fidoctor.fixes import FixContext, NotApplicable, Plan
from fidoctor.fixes._envfile import env_plan
from fidoctor.model import Finding

ID = "use-local-workspace"
SAFETY = "safe"


def plan(finding: Finding, ctx: FixContext) -> Plan:
    base = finding.data.get("workspace_base")
    if not isinstance(base, str) or not base.startswith("/"):
        raise NotApplicable("no node-local, writable dir with room was found for the cache")
    parent = base
    while not os.path.exists(parent) and parent != "/":
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise NotApplicable(f"{parent} is not a directory")
    return env_plan(finding, ID, SAFETY,
                    f"the cache moves to {base}/.cache/flashinfer (node-local, writable by the "
                    "server)", {"FLASHINFER_WORKSPACE_BASE": base},
                    ["the new cache starts cold: the next start compiles its modules "
                     "(fidoctor warmup can do that first); the old cache is left as it was"])
