"""build-killed in server output: a compiler died to SIGKILL (the OOM killer, mostly).

What: ninja's ``FAILED: [code=137]`` and the shell's ``Killed`` line (a real
cicc SIGKILLed mid-build prints exactly these), nvcc's ``nvcc error   : 'cicc'
died due to signal 9 (Kill signal)``, gcc's ``c++: fatal error: Killed signal
terminated program cc1plus``, ``returned non-zero exit status -9`` / ``137``
(FlashInfer#3634, FlashInfer PR#3636).
Why: ninja runs nproc+2 jobs by default and one CUTLASS/FA3 TU needs 3–8 GiB;
the kernel's OOM killer (or a cgroup limit) ends the biggest compiler. The
killed build leaves a half-built module behind.
Fix: a MAX_JOBS that fits in memory, then rebuild (``fidoctor fix`` offers
``set-max-jobs`` on the machine).
"""

from __future__ import annotations

import re
from typing import Dict, List

from fidoctor.model import Fix
from fidoctor.serverlog.matchers import confirm

ID = "build-killed"
SEVERITY = "error"
ANCHOR = "build"
TRIGGERS = ("[code=137]", "[code=-9]", "signal 9", "killed signal terminated", "status -9",
            "status 137", "exit code 137")
PATTERNS = [
    re.compile(r"FAILED: \[code=(?P<code>137|-9)\]"),
    re.compile(r"'(?P<prog>[\w+.\-]+)' died due to signal 9"),
    re.compile(r"Killed signal terminated program (?P<prog>[\w+.\-]+)"),
    re.compile(r"(?:non-zero exit status|exit code|exit status) (?P<code>-9|137)\b"),
]


def title(d: Dict[str, str]) -> str:
    who = d.get("prog") or "a compiler"
    return f"{who} was killed (SIGKILL, most often the OOM killer) during a JIT build"


def fixes(d: Dict[str, str]) -> List[Fix]:
    return [Fix("Build with fewer parallel jobs (about one per 4 GiB of free memory for FA3/CUTLASS "
                "modules), then restart so the half-built module is rebuilt",
                ["export MAX_JOBS=4", "dmesg -T | grep -iE 'killed process|oom' | tail",
                 confirm()], safety="safe")]
