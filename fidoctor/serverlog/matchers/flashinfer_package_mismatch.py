"""flashinfer-package-mismatch in server output: FlashInfer's own version check.

What: FlashInfer's ``jit/env.py`` raises ``flashinfer-cubin version (0.6.13) does
not match flashinfer version (0.7.2.post1). …`` (the same for
flashinfer-jit-cache, and jit-cache providers against their shim); 0.7.2 warns
``Ignoring incompatible flashinfer-jit-cache package (kernels will be
JIT-compiled instead): …`` and quietly compiles everything.
Why: the three packages must be one version; a mismatched jit-cache turns a
fast start into a long cold compile, and forcing past the check
(FLASHINFER_DISABLE_VERSION_CHECK=1) loads kernels of another version.
Fix: pin flashinfer-python, flashinfer-cubin and flashinfer-jit-cache to one
version.
"""

from __future__ import annotations

import re
from typing import Dict, List

from fidoctor.model import Fix
from fidoctor.serverlog.matchers import confirm

ID = "flashinfer-package-mismatch"
SEVERITY = "error"
ANCHOR = "none"
TRIGGERS = ("does not match flashinfer", "ignoring incompatible flashinfer")
PATTERNS = [
    re.compile(r"(?P<pkg>flashinfer[-_](?:cubin|jit[-_]cache)[\w\-]*) version \((?P<have>[^)]+)\) "
               r"does not match flashinfer(?:-jit-cache)? version \((?P<want>[^)]+)\)"),
    re.compile(r"Ignoring incompatible (?P<pkg>flashinfer[- ](?:cubin|jit[-_]cache)[\w\-]*)"
               r"(?: package| provider (?P<provider>\S+))"),
]


def title(d: Dict[str, str]) -> str:
    if d.get("have"):
        return (f"{d['pkg']} {d['have']} does not match flashinfer {d['want']} (FlashInfer's own "
                "version check)")
    return f"FlashInfer ignores the installed {d.get('pkg', 'package')}: its version does not match"


def fixes(d: Dict[str, str]) -> List[Fix]:
    return [Fix("Install one version of all FlashInfer packages (jit-cache from its cuXXX index)",
                ["pip list 2>/dev/null | grep -i flashinfer",
                 "pip install flashinfer-python==<v> flashinfer-cubin==<v>   # the same <v>",
                 confirm()], safety="safe")]
