"""build-flags-debug in server output: JIT modules compiled as device-debug builds.

What: nvcc command lines in the log (FlashInfer prints them with
FLASHINFER_JIT_VERBOSE=1, ninja on failure) carrying ``-G`` /
``--device-debug`` / ``-O0``. With FlashInfer ≥ 0.5, FLASHINFER_JIT_VERBOSE=1
without FLASHINFER_JIT_DEBUG=0 builds exactly that.
Why: device-debug kernels are many times slower, and ptxas crashes on
CUTLASS templates built that way (``died due to signal 11``; xorbitsai PR#5130).
Fix: ``FLASHINFER_JIT_DEBUG=0`` alongside FLASHINFER_JIT_VERBOSE=1, and
rebuild the modules.
"""

from __future__ import annotations

import re
from typing import Dict, List

from fidoctor.model import Fix
from fidoctor.serverlog.matchers import confirm

ID = "build-flags-debug"
SEVERITY = "warning"
ANCHOR = "build"
TRIGGERS = ("nvcc",)
NVCC_LINE = re.compile(r"(?:^|\s|/)nvcc\s")
DEBUG_FLAG = re.compile(r"\s(?P<flag>-G|--device-debug|-O0)(?=\s|$)")
PATTERNS = [DEBUG_FLAG]


def match(text: str):
    if not NVCC_LINE.search(text):
        return None
    m = DEBUG_FLAG.search(text)
    return {"flag": m.group("flag")} if m else None


def title(d: Dict[str, str]) -> str:
    return f"JIT modules are compiled as debug builds (nvcc {d.get('flag')}): slow kernels"


def fixes(d: Dict[str, str]) -> List[Fix]:
    return [Fix("Keep verbose logs without a debug build, then rebuild the modules",
                ["export FLASHINFER_JIT_DEBUG=0", confirm()], safety="safe")]
