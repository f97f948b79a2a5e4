"""The target interpreter (the serving venv): versions and locations, without importing torch.

Queried in a subprocess with a timeout, in the target's own environment, so
PYTHONPATH and friends apply as they do for the server. A missing or broken
interpreter is recorded (``usable: False`` with the reason), never raised.
torch's CUDA version is read from ``torch/version.py`` as text.
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, Optional

from fidoctor import proc
from fidoctor.fsutil import read_head
from fidoctor.safeio import UnsafeFile, loads_json
from fidoctor.snapshot.gather._target_script import SCRIPT

NAME = "target"
BUDGET_S = 6.0
ORDER = 1
# A healthy interpreter answers in well under a second (0.05–0.3 s here, ~1 s cold on a
# network file system); a hanging one must not hold up every gatherer that waits for it.
QUERY_TIMEOUT_S = 4.0
_TORCH_CUDA = re.compile(r"^cuda\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", re.M)
_TORCH_VERSION = re.compile(r"^__version__\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", re.M)


def _torch_version_file(torch_dir: Optional[str]) -> Dict[str, Any]:
    if not torch_dir:
        return {}
    head = read_head(os.path.join(torch_dir, "version.py"), 4096)
    if head is None:
        return {}
    text = head.decode("utf-8", "replace")
    out = {}
    m = _TORCH_CUDA.search(text)
    if m:
        out["cuda"] = m.group(1)
    m = _TORCH_VERSION.search(text)
    if m:
        out["version"] = m.group(1)
    return out


def query(python: str, env: Dict[str, str], timeout: float = QUERY_TIMEOUT_S) -> Dict[str, Any]:
    if not os.path.exists(python):
        return {"usable": False, "python": python, "reason": f"{python} does not exist"}
    if not os.access(python, os.X_OK):
        return {"usable": False, "python": python, "reason": f"{python} is not executable"}
    qenv = dict(env)
    qenv.pop("PYTHONSTARTUP", None)
    qenv["PYTHONNOUSERSITE"] = env.get("PYTHONNOUSERSITE", "")
    r = proc.run([python, "-c", SCRIPT], timeout=timeout, env=qenv)
    if not r.ok:
        return {"usable": False, "python": python, "reason": r.describe(),
                "stderr_tail": r.stderr[-2000:]}
    try:
        info = loads_json(r.stdout.strip().splitlines()[-1].encode("utf-8", "replace"), python)
    except (UnsafeFile, IndexError):
        info = None
    shapes = {"modules": dict, "packages": dict, "executable": str, "version": str}
    if not isinstance(info, dict) or any(k in info and not isinstance(info[k], t)
                                         for k, t in shapes.items()):
        # no JSON, or not the reply the script prints (a sitecustomize that prints at exit)
        return {"usable": False, "python": python,
                "reason": "interpreter ran but its last line is not the reply fidoctor's query "
                          "prints (not CPython 3.9+? a sitecustomize printing at exit?)",
                "stdout_tail": r.stdout[-500:]}
    torch_dir = (info.get("modules", {}).get("torch") or {}).get("dir")
    info["torch"] = _torch_version_file(torch_dir)
    info["usable"] = True
    info["python"] = python
    return info


def gather(ctx, done) -> Dict[str, Any]:
    return query(ctx.python, ctx.env)
