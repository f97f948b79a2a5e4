"""torch-abi-mismatch in server output: a FlashInfer library missing a libtorch/c10 symbol.

What: ``ImportError: …/flashinfer/flashinfer_kernels.abi3.so: undefined symbol:
_ZN5torch3jit17parseSchemaOrNameERKSsb`` (FlashInfer#911) or
``_ZN3c1021throwNullDataPtrErrorEv`` (FlashInfer#382): the loader's words for a
C++ symbol of torch/c10/at that the installed torch does not export.
Why: the wheel or cached module was built against another torch version or
C++ ABI (``Ss`` is the pre-CXX11 ``std::string``); since FlashInfer#828 the
failure falls back to a JIT build that nobody expected.
Fix: install the FlashInfer build that matches this torch (or rebuild the
cached module against it).
"""

from __future__ import annotations

import re
from typing import Dict, List

from fidoctor.model import Fix
from fidoctor.serverlog.matchers import confirm

ID = "torch-abi-mismatch"
SEVERITY = "error"
ANCHOR = "self"
TRIGGERS = ("undefined symbol: _z",)
PATTERNS = [re.compile(
    r"(?:(?P<path>/\S+?\.so(?:\.\d+)*): )?undefined symbol: "
    r"(?P<symbol>_ZN[KSt]*\d+(?:torch|c10|at|caffe2)\w*)")]


def title(d: Dict[str, str]) -> str:
    where = d.get("path", "a FlashInfer library").rsplit("/", 1)[-1]
    return (f"{where} needs the torch C++ symbol {d.get('symbol', '?')}, which this torch does "
            "not export: built for another torch version or C++ ABI")


def fixes(d: Dict[str, str]) -> List[Fix]:
    return [Fix("Install the FlashInfer build made for this torch (same torch version and CUDA "
                "tag), or move the cached module aside so it is rebuilt against this torch",
                [confirm(), "python -c 'import torch; print(torch.__version__, "
                 "torch._C._GLIBCXX_USE_CXX11_ABI)'"], safety="safe")]
