"""FlashInfer's own environment report, run in the target and kept verbatim.

Why: ``flashinfer collect-env --json`` (FlashInfer 0.7+) already says what
FlashInfer sees (versions, archs it resolves, the JIT cache, loaded vs
installed GPU libraries). ``report`` includes it as it is, collapsed, rather
than re-deriving it. It imports torch and FlashInfer, so it runs only for
``report``, in the target interpreter, guarded (``proc.run``: deadline, output
cap, the whole process group killed on timeout), and only when the target has
FlashInfer. Older FlashInfer has no such command: that is recorded, not fatal.
"""

from __future__ import annotations

import json
import time
from typing import Any, Dict, Mapping, Optional

from fidoctor.proc import run

NAME = "collect_env"
BUDGET_S = 60.0
MAX_TEXT = 256 << 10


def collect(python: str, env: Optional[Mapping[str, str]] = None,
            budget_s: float = BUDGET_S) -> Dict[str, Any]:
    """Run ``python -m flashinfer collect-env --json``; its output as parsed JSON, or why not."""
    argv = [python, "-m", "flashinfer", "collect-env", "--json"]
    t0 = time.monotonic()
    r = run(argv, timeout=budget_s, env=env)
    out: Dict[str, Any] = {"argv": argv, "elapsed_s": round(time.monotonic() - t0, 2),
                           "returncode": r.returncode, "ok": r.ok, "error": ""}
    if not r.ok:
        out["error"] = r.describe()
        return out
    text = r.stdout[:MAX_TEXT]
    try:
        out["json"] = json.loads(text)
    except ValueError:
        out["text"] = text
        out["error"] = "its output is not JSON"
    return out
