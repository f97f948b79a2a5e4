"""jit-build-failed: a JIT build failed and the log does not show a cause fidoctor knows.

What: ninja's ``FAILED: [code=N] …`` / ``ninja: build stopped: subcommand
failed.``, FlashInfer's ``RuntimeError: Ninja build failed.``, torch's ``Error
building extension '<name>'`` with no other finding naming why. The first
compiler ``error`` lines of that build are quoted.
Why: better a failed build said plainly, with the lines that matter, than a
guess or silence.
Fix: read the quoted compiler error; ``fidoctor diagnose`` on the machine
checks toolkit, compiler, cache and memory.
"""

from __future__ import annotations

import re
from typing import Dict, List

from fidoctor.model import Fix
from fidoctor.serverlog.matchers import confirm

ID = "jit-build-failed"
SEVERITY = "error"
ANCHOR = "build"
TRIGGERS = ("failed: [code=", "build stopped: subcommand failed", "ninja build failed",
            "error building extension")
PATTERNS = [
    re.compile(r"^FAILED: \[code=(?P<code>-?\d+)\]"),
    re.compile(r"(?P<stopped>ninja: build stopped: subcommand failed)"),
    re.compile(r"(?P<ninja>Ninja build failed)"),
    re.compile(r"Error building extension '(?P<name>[^']+)'"),
]
# Dropped when another error finding of the same log names the cause.
GENERIC = True


def title(d: Dict[str, str]) -> str:
    code = f" (exit code {d['code']})" if d.get("code") else ""
    return f"a FlashInfer JIT build failed{code}; the log shows no cause fidoctor recognises"


def fixes(d: Dict[str, str]) -> List[Fix]:
    return [Fix("Read the first compiler error quoted above; check the machine's toolkit, compiler, "
                "cache and memory", [confirm()], safety="safe")]
