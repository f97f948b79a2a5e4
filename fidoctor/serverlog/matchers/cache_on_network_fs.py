"""cache-on-network-fs in server output: the JIT cache on NFS/Lustre/GPFS misbehaves.

What: ``Stale file handle`` (``[Errno 116]``; ``ld: final link failed: Stale
file handle``, SGLang#31347), ``[Errno 37] No locks available`` (an NFS mount
with ``nolock``), filelock's ``NotImplementedError`` on a file system without
flock, for paths of the JIT cache.
Why: flock is node-local or missing on network file systems, so ranks of two
nodes build into one dir at once (FlashInfer PR#993, PR#3777).
Fix: a node-local ``FLASHINFER_WORKSPACE_BASE``.
"""

from __future__ import annotations

import re
from typing import Dict, List

from fidoctor.model import Fix
from fidoctor.serverlog.matchers import confirm

ID = "cache-on-network-fs"
SEVERITY = "warning"
ANCHOR = "self"
TRIGGERS = ("stale file handle", "[errno 116]", "[errno 37]", "no locks available")
PATTERNS = [
    re.compile(r"\[Errno (?P<errno>116|37)\] [^:']*(?:: '(?P<path>[^']+)')?"),
    re.compile(r"(?:(?P<path>/\S+): )?(?P<what>Stale file handle|No locks available)"),
]


def title(d: Dict[str, str]) -> str:
    what = d.get("what") or {"116": "Stale file handle", "37": "No locks available"}.get(
        d.get("errno", ""), "a network file system error")
    return f"the JIT cache sits on a network file system: {what}"


def fixes(d: Dict[str, str]) -> List[Fix]:
    return [Fix("Use a node-local workspace for each node (and rank group)",
                ["export FLASHINFER_WORKSPACE_BASE=/tmp/flashinfer-$SLURM_LOCALID   # node-local",
                 confirm()], safety="safe")]
