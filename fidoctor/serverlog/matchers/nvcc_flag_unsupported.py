"""nvcc-flag-unsupported in server output: nvcc does not know a flag FlashInfer passes.

What: ``nvcc fatal   : Unknown option '-static-global-template-stub=false'`` or
``nvcc fatal   : Unknown option '--compress-mode'``: FlashInfer passes flags for
the toolkit it expects; an older nvcc stops at the first one it lacks.
Why: FlashInfer 0.7 adds ``--compress-mode=size`` and (nvcc ≥ 12.8)
``-static-global-template-stub=false``; flags from FLASHINFER_EXTRA_CUDAFLAGS
can be unknown too.
Fix: the toolkit this FlashInfer version expects, or drop the extra flag.
"""

from __future__ import annotations

import re
from typing import Dict, List

from fidoctor.model import Fix
from fidoctor.serverlog.matchers import confirm

ID = "nvcc-flag-unsupported"
SEVERITY = "error"
ANCHOR = "build"
TRIGGERS = ("nvcc fatal", "nvcc error")
PATTERNS = [re.compile(r"nvcc (?:fatal|error)\s*: Unknown option '(?P<flag>[^']+)'")]


def title(d: Dict[str, str]) -> str:
    return f"nvcc does not know the flag {d.get('flag', '?')} that the build passes"


def fixes(d: Dict[str, str]) -> List[Fix]:
    return [Fix("Use the CUDA toolkit this FlashInfer version expects (CUDA_HOME), or remove the "
                "flag from FLASHINFER_EXTRA_CUDAFLAGS if it came from there",
                ["nvcc --version", confirm()], safety="safe")]
