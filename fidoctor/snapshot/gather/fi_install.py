"""The installed FlashInfer, read as text: its own version checks and when it was installed.

Never imports FlashInfer (that would initialise CUDA). Reads
``flashinfer/jit/env.py`` (and ``__init__.py``) of the package the target
resolves, and keeps the lines of FlashInfer's own check between
flashinfer-python and flashinfer-cubin / flashinfer-jit-cache, so a finding
can quote the rule of the version at hand instead of assuming one. The
``RECORD`` of flashinfer-python's dist-info dates the install (cache-stale-version).

Data contract (``data``; never renamed):
  dir: the flashinfer package dir; version: flashinfer-python's version
  checks: [{file, line, text}] lines of the version checks (≤ 40)
  ignores: {"flashinfer-cubin": bool, "flashinfer-jit-cache": bool}: this version
           warns "Ignoring incompatible …" and carries on instead of raising
  raises: bool: a mismatch raises RuntimeError somewhere in those checks
  disable_var: FlashInfer reads FLASHINFER_DISABLE_VERSION_CHECK
  record: {path, mtime} of flashinfer-python's dist-info RECORD (the install time)
  requires: {dist: specifier} flashinfer-python's own ``Requires-Dist`` (its METADATA, no
           markers) for the packages its JIT modules compile against (REQUIRED_DISTS:
           apache-tvm-ffi from 0.4); metadata: the METADATA path they came from
"""

from __future__ import annotations

import glob
import os
import re
from typing import Any, Dict, List

from fidoctor.fsutil import read_head

NAME = "fi_install"
BUDGET_S = 3.0
ORDER = 7
REQUIRES = ("target",)
FILES = ("jit/env.py", "__init__.py", "jit/__init__.py")
REQUIRED_DISTS = ("apache-tvm-ffi",)  # compiled against: headers + library in every JIT module
_CHECK = re.compile(r"def _check_\w*version|does not match|Ignoring incompatible|"
                    r"FLASHINFER_DISABLE_VERSION_CHECK|package_version !=|"
                    r"startswith\(f\"\{flashinfer_version\}\+\"\)")


def gather(ctx, done) -> Dict[str, Any]:
    t = done["target"].data if "target" in done and done["target"].ok else {}
    fi_dir = (t.get("modules", {}).get("flashinfer") or {}).get("dir")
    pkg = t.get("packages", {}).get("flashinfer-python") or t.get("packages", {}).get("flashinfer") \
        or {}
    out: Dict[str, Any] = {"dir": fi_dir, "version": pkg.get("version"), "checks": [],
                           "ignores": {}, "raises": False, "disable_var": False}
    if not fi_dir:
        return out
    checks: List[Dict[str, Any]] = []
    text_all = ""
    for rel in FILES:
        raw = read_head(os.path.join(fi_dir, rel), 1 << 20)
        if raw is None:
            continue
        text = raw.decode("utf-8", "replace")
        text_all += text
        for i, line in enumerate(text.splitlines(), 1):
            if _CHECK.search(line) and len(checks) < 40:
                checks.append({"file": f"flashinfer/{rel}", "line": i, "text": line.strip()})
    out["checks"] = checks
    out["ignores"] = {
        "flashinfer-cubin": "Ignoring incompatible flashinfer-cubin" in text_all,
        "flashinfer-jit-cache": "Ignoring incompatible flashinfer-jit-cache" in text_all,
    }
    out["raises"] = "does not match" in text_all and "RuntimeError" in text_all
    out["disable_var"] = "FLASHINFER_DISABLE_VERSION_CHECK" in text_all
    loc = pkg.get("location")
    if loc and pkg.get("version"):
        for pat in (f"flashinfer_python-{pkg['version']}.dist-info",
                    "flashinfer_python-*.dist-info", "flashinfer-*.dist-info"):
            hits = sorted(glob.glob(os.path.join(loc, pat, "RECORD")))
            if hits:
                try:
                    out["record"] = {"path": hits[0], "mtime": os.stat(hits[0]).st_mtime}
                except OSError:
                    pass
                meta = os.path.join(os.path.dirname(hits[0]), "METADATA")
                requires = _requires(meta)
                if requires:
                    out["requires"], out["metadata"] = requires, meta
                break
    return out


def _requires(path: str) -> Dict[str, str]:
    """``Requires-Dist`` specifiers of REQUIRED_DISTS in a METADATA file (markers skipped)."""
    raw = read_head(path, 1 << 20)
    if raw is None:
        return {}
    try:
        from packaging.requirements import InvalidRequirement, Requirement
    except ImportError:
        return {}
    out: Dict[str, str] = {}
    for line in raw.decode("utf-8", "replace").splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        try:
            req = Requirement(line.split(":", 1)[1].strip())
        except InvalidRequirement:
            continue
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        if name in REQUIRED_DISTS and req.marker is None and str(req.specifier):
            out[name] = str(req.specifier)
    return out
