"""nvcc-arch-unsupported in server output: nvcc does not know the arch it is asked for.

What: ``nvcc fatal   : Unsupported gpu architecture 'compute_90a'`` (FlashInfer#1658,
CUDA 11.8 asked for FA3), ``ptxas fatal   : Value 'sm_100a' is not defined for
option 'gpu-name'``.
Why: FlashInfer asks for ``compute_90a`` (FA3, CUDA ≥ 12.0), ``sm_100a`` (≥ 12.8),
``sm_120f`` (≥ 12.9); an older toolkit cannot build them.
FlashInfer's own ``FlashInfer requires GPUs with sm75 or higher`` is read too: an
RTX 5090 with CUDA 12.8 gets it because the arch is dropped (FlashInfer#3675,
vLLM PR#50751).
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
            "is not defined for option 'gpu-architecture'", "requires gpus with sm75",
            "requires sm75")
PATTERNS = [
    re.compile(r"Unsupported gpu architecture '(?P<arch>[\w.]+)'"),
    re.compile(r"Value '(?P<arch>[\w.]+)' is not defined for option 'gpu-(?:name|architecture)'"),
    # FlashInfer's own words when every arch was dropped (sm_120 with CUDA < 12.9, FlashInfer#3675)
    re.compile(r"(?P<fi>FlashInfer requires (?:GPUs with )?sm75(?: or higher|\+))"
               r"(?:\. Detected TARGET_CUDA_ARCHS=(?P<archs>\S+?)\.?$)?"),
]


def title(d: Dict[str, str]) -> str:
    if d.get("fi"):
        return ("FlashInfer found no GPU arch it can build for (\"requires GPUs with sm75 or higher\"): "
                "most often a toolkit older than the GPU needs (sm_120 needs CUDA >= 12.9), else no "
                "visible GPU or a FLASHINFER_CUDA_ARCH_LIST that names none")
    return f"this nvcc cannot build for {d.get('arch', 'the requested arch')}"


def fixes(d: Dict[str, str]) -> List[Fix]:
    return [Fix("Use a CUDA toolkit that supports this arch (CUDA_HOME=/usr/local/cuda-12.8 or "
                "newer for sm_90a/sm_100a), or install the prebuilt flashinfer-jit-cache",
                ["nvcc --list-gpu-arch", confirm()], safety="safe")]
