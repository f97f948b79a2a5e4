"""nvcc-arch-unsupported in server output: nvcc does not know the arch it is asked for.

What: ``nvcc fatal   : Unsupported gpu architecture 'compute_90a'`` (FlashInfer#1658,
CUDA 11.8 asked for FA3), ``ptxas fatal   : Value 'sm_100a' is not defined for
option 'gpu-name'``.
Why: FlashInfer asks for ``compute_90a`` (FA3, CUDA ≥ 12.0), ``sm_100a`` (≥ 12.8),
``sm_120f`` (≥ 12.9); an older toolkit cannot build them.
Fix: a newer CUDA toolkit (CUDA_HOME), a FLASHINFER_CUDA_ARCH_LIST this nvcc
knows, or the prebuilt flashinfer-jit-cache.
"""

from __future__ import annotations

import re
from typing import Dict, List

from fidoctor.model import Fix
from fidoctor.serverlog.matchers import confirm

ID = "nvcc-arch-unsupported"
SEVERITY = "error"
ANCHOR = "build"
TRIGGERS = ("unsupported gpu architecture", "is not defined for option 'gpu-name'",
            "is not defined for option 'gpu-architecture'")
PATTERNS = [
    re.compile(r"Unsupported gpu architecture '(?P<arch>[\w.]+)'"),
    re.compile(r"Value '(?P<arch>[\w.]+)' is not defined for option 'gpu-(?:name|architecture)'"),
]


def title(d: Dict[str, str]) -> str:
    return f"this nvcc cannot build for {d.get('arch', 'the requested arch')}"


def fixes(d: Dict[str, str]) -> List[Fix]:
    return [Fix("Use a CUDA toolkit that supports this arch (CUDA_HOME=/usr/local/cuda-12.8 or "
                "newer for sm_90a/sm_100a), or install the prebuilt flashinfer-jit-cache",
                ["nvcc --list-gpu-arch", confirm()], safety="safe")]
