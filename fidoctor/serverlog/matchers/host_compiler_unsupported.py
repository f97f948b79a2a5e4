"""host-compiler-unsupported in server output: nvcc's ``host_config.h`` rejects the compiler.

What: ``crt/host_config.h:NNN:2: error: #error -- unsupported GNU version! gcc
versions later than 12 are not supported! The nvcc flag
'-allow-unsupported-compiler' can be used to override this version check``
(the same for clang, MSVC, ICC, NVHPC), printed by every TU of the build.
Why: nvcc uses ``gcc`` from PATH unless FlashInfer passes ``-ccbin $CC``;
``CXX`` alone is not enough (SGLang PR#35683).
Fix: ``CC``/``CXX`` to an installed compiler the toolkit accepts, or another
toolkit.
"""

from __future__ import annotations

import re
from typing import Dict, List

from fidoctor.model import Fix
from fidoctor.serverlog.matchers import confirm

ID = "host-compiler-unsupported"
SEVERITY = "error"
ANCHOR = "build"
TRIGGERS = ("unsupported gnu version", "unsupported clang version", "unsupported microsoft",
            "unsupported icc", "unsupported nvhpc", "unsupported pgi", "#error -- unsupported")
PATTERNS = [re.compile(
    r"#error\s+--\s+unsupported (?P<family>[\w ]+?) version!"
    r"(?: (?P<rule>\w+ versions? (?:later|earlier|older|newer) than [\d.]+ (?:are|is) not "
    r"supported!?))?")]


def title(d: Dict[str, str]) -> str:
    rule = d.get("rule")
    return (f"nvcc rejects the host compiler (unsupported {d.get('family', '?')} version"
            + (f": {rule.rstrip('!')}" if rule else "") + ")")


def fixes(d: Dict[str, str]) -> List[Fix]:
    return [Fix("Point CC and CXX at an installed compiler this toolkit accepts (FlashInfer passes "
                "CC to nvcc as -ccbin), or use a toolkit that supports this compiler",
                ["export CC=/usr/bin/gcc-12 CXX=/usr/bin/g++-12   # a version the toolkit accepts",
                 confirm()], safety="safe")]
