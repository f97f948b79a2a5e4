"""cuda-driver-too-old in server output: the driver is older than the CUDA it is asked to run.

What: ``CUDA driver version is insufficient for CUDA runtime version``
(``cudaErrorInsufficientDriver``, error 35), ``the provided PTX was compiled with
an unsupported toolchain`` (``CUDA_ERROR_UNSUPPORTED_PTX_VERSION``), torch's
``The NVIDIA driver on your system is too old`` (FlashInfer#5145, #3229,
vLLM#47397).
Why: modules built by an nvcc newer than the driver's CUDA version (or linked
to a newer libcudart) cannot run: the driver cannot JIT their PTX.
Fix: a toolkit no newer than the driver (CUDA_HOME) and a cache rebuilt with
it, or a newer driver.
"""

from __future__ import annotations

import re
from typing import Dict, List

from fidoctor.model import Fix
from fidoctor.serverlog.matchers import confirm

ID = "cuda-driver-too-old"
SEVERITY = "error"
ANCHOR = "none"
TRIGGERS = ("driver version is insufficient", "insufficientdriver", "unsupported toolchain",
            "unsupported_ptx_version", "driver on your system is too old")
PATTERNS = [
    re.compile(r"(?P<what>CUDA driver version is insufficient for CUDA runtime version)"),
    re.compile(r"(?P<what>cudaErrorInsufficientDriver|CUDA_ERROR_UNSUPPORTED_PTX_VERSION)"),
    re.compile(r"(?P<what>the provided PTX was compiled with an unsupported toolchain)"),
    re.compile(r"(?P<what>The NVIDIA driver on your system is too old)"
               r"(?: \(found version (?P<found>\d+)\))?"),
]


def title(d: Dict[str, str]) -> str:
    found = f" (driver {d['found']})" if d.get("found") else ""
    return f"the NVIDIA driver{found} is older than the CUDA the server runs: {d.get('what')}"


def fixes(d: Dict[str, str]) -> List[Fix]:
    return [Fix("Build with a CUDA toolkit no newer than the driver (nvidia-smi shows its CUDA "
                "version) and clear the modules built by the newer one, or upgrade the driver",
                ["nvidia-smi | head -4", "nvcc --version | tail -2", confirm()], safety="safe")]
