"""cudart-missing-symbol in server output: the loader's ``undefined symbol: cuda…``.

What: ``OSError: …/cached_ops/<module>/<module>.so: undefined symbol:
cudaGetDriverEntryPointByVersion, version libcudart.so.12`` (the dynamic
loader's own words, raised by ``ctypes.CDLL`` / ``tvm_ffi.load_module`` /
``torch.ops.load_library``).
Why: the module was compiled by an nvcc newer than the libcudart the server
maps (torch's pip wheel comes first through its RPATH), so loading it fails
right after a successful build (SGLang#5695).
Fix: make the newer libcudart the one that loads; ``fidoctor diagnose`` on the
machine names which one is mapped and ``fidoctor fix`` offers the ways.
"""

from __future__ import annotations

import re
from typing import Dict, List

from fidoctor.model import Fix
from fidoctor.serverlog.matchers import confirm

ID = "cudart-missing-symbol"
SEVERITY = "error"
ANCHOR = "self"
TRIGGERS = ("undefined symbol: cuda", "undefined symbol: __cuda")
PATTERNS = [re.compile(
    r"(?:(?P<path>/\S+?\.so(?:\.\d+)*): )?undefined symbol: (?P<symbol>_{0,2}cuda\w+)"
    r"(?:, version (?P<version>libcudart\.so\.\d+))?")]


def title(d: Dict[str, str]) -> str:
    lib = d.get("version") or "the libcudart it loads"
    return (f"a JIT module needs {d.get('symbol', 'a CUDA runtime symbol')}, which {lib} "
            "loaded by the server does not export")


def fixes(d: Dict[str, str]) -> List[Fix]:
    return [Fix("Confirm on the machine which libcudart the server maps and which one has the "
                "symbol; then apply the fix it offers (a process-scoped preload is the safest)",
                [confirm(), "fidoctor fix --dry-run"], safety="safe")]
