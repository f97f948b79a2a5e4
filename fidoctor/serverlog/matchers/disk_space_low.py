"""disk-space-low in server output: a build ran out of space (or inodes).

What: ``No space left on device`` from nvcc/cicc/ptxas/as/ld or Python
(``[Errno 28]``), e.g. ``catastrophic error: error while writing generated C++
file: No space left on device``, ``when writing output to …/tmpxft_….ii``;
localized (``设备上没有空间``, ``Auf dem Gerät ist kein Speicherplatz mehr
verfügbar``, ``Aucun espace disponible sur le périphérique``).
Why: nvcc writes its temporaries to ``$TMPDIR``; old versions pile up under
the cache; a full disk kills a build half-way and leaves a broken module.
Fix: free space on the cache's file system or TMPDIR, or point TMPDIR /
FLASHINFER_WORKSPACE_BASE at a bigger disk.
"""

from __future__ import annotations

import re
from typing import Dict, List

from fidoctor.model import Fix
from fidoctor.serverlog.matchers import confirm

ID = "disk-space-low"
SEVERITY = "error"
ANCHOR = "self"
TRIGGERS = ("no space left on device", "[errno 28]", "设备上没有空间", "kein speicherplatz",
            "aucun espace disponible", "no queda espacio", "デバイスに空き領域がありません")
PATTERNS = [
    re.compile(r"\[Errno 28\] [^:']*(?:: '(?P<path>[^']+)')?"),
    re.compile(r"(?:(?P<path>/\S+): )?(?:No space left on device|设备上没有空间|"
               r"Auf dem Gerät ist kein Speicherplatz mehr verfügbar|"
               r"Aucun espace disponible sur le périphérique|No queda espacio en el dispositivo|"
               r"デバイスに空き領域がありません)"),
]


def title(d: Dict[str, str]) -> str:
    return "a JIT build ran out of disk space" + (f" writing {d['path']}" if d.get("path") else "")


def fixes(d: Dict[str, str]) -> List[Fix]:
    return [Fix("Free space on the cache's file system and TMPDIR (old FlashInfer versions pile up "
                "under ~/.cache/flashinfer/<version>), or point TMPDIR at a bigger disk",
                ["df -h ${TMPDIR:-/tmp} ~/.cache/flashinfer; df -i ~/.cache/flashinfer",
                 "du -sh ~/.cache/flashinfer/*", confirm()], safety="safe")]
