"""cache-arch-mismatch in server output: a FlashInfer kernel launch finds no image for the GPU.

What: ``RuntimeError: Check failed: (status == cudaSuccess) is false:
SingleDecodeWithKVCache kernel launch failed, error: no kernel image is available
for execution on the device`` (FlashInfer 0.7's TVM-FFI check after the launch;
seen on an H200 with a module built under FLASHINFER_CUDA_ARCH_LIST=8.0,
tests/fixtures/real-h200/arch_call.json), or CUDA's ``cudaErrorNoKernelImageForDevice``
text in another FlashInfer frame. Kept only when the same stack names FlashInfer
(its path, ``cached_ops``, ``tvm_ffi``): torch's own ops raise the same CUDA words.
Why: the module was compiled for an arch that does not run on this GPU (a cache
copied from another machine, a wrong FLASHINFER_CUDA_ARCH_LIST); it loads, then
every launch fails.
Fix: build for this GPU (FLASHINFER_CUDA_ARCH_LIST set to its capability, or
unset); ``fidoctor diagnose`` on the machine names the modules and their archs.
"""

from __future__ import annotations

import re
from typing import Dict, List

from fidoctor.model import Fix
from fidoctor.serverlog.matchers import confirm

ID = "cache-arch-mismatch"
SEVERITY = "error"
ANCHOR = "self"
TRIGGERS = ("no kernel image is available",)
PATTERNS = [re.compile(r"(?:(?P<kernel>\w+) kernel launch failed, error: )?"
                       r"no kernel image is available for execution on the device")]
# The CUDA words alone may come from torch or any CUDA library: the same traceback must
# show a FlashInfer frame (its package, its JIT workspace, TVM-FFI's call path).
CONFIRM = (re.compile(r"flashinfer|cached_ops|tvm_ffi"), 25)


def title(d: Dict[str, str]) -> str:
    what = f"FlashInfer's {d['kernel']} kernel" if d.get("kernel") else "a FlashInfer kernel"
    return (f"{what} has no image for this GPU (\"no kernel image is available\"): its module "
            "was built for another arch")


def fixes(d: Dict[str, str]) -> List[Fix]:
    return [Fix("Confirm on the machine which cached modules were built for another arch, then "
                "set FLASHINFER_CUDA_ARCH_LIST to the GPU's capability (or unset it) so they rebuild",
                [confirm(), "nvidia-smi --query-gpu=name,compute_cap --format=csv"],
                safety="safe")]
