"""The host compilers a FlashInfer JIT build would use, with family and version.

Why: nvcc refuses host compilers newer than it supports
(``#error -- unsupported GNU version!``), and users set ``CXX=g++-12`` to no
avail, because FlashInfer forwards ``CC`` — not ``CXX`` — to nvcc as
``-ccbin``. So two compilers matter, resolved on the *target's* PATH and
environment:

- ``nvcc_host``: ``$CC`` when set (→ ``-ccbin $CC``), else ``gcc`` on PATH
  (nvcc's own default);
- ``cxx``: ``$CXX`` when set, else ``c++`` (FlashInfer's .cpp compiles and
  the link step).

Each is run as ``X --version`` with a timeout (LC_ALL=C, so the banner is
English). A compiler that cannot be found or run is recorded with the reason.
Data contract: :class:`fidoctor.snapshot.types.HostCompilerFacts`.
"""

from __future__ import annotations

import os
import re
import shutil
from typing import Any, Dict, Optional, Tuple

from fidoctor import proc
from fidoctor.snapshot.types import CompilerFacts, HostCompilerFacts, ToolRun

NAME = "host_compiler"
BUDGET_S = 15.0
ORDER = 4
VERSION_TIMEOUT_S = 6.0
_CLANG = re.compile(r"clang version (\d+(?:\.\d+)+)")
_TRAILING = re.compile(r"(\d+\.\d+(?:\.\d+)?)\s*$")
_ANY = re.compile(r"(\d+\.\d+(?:\.\d+)?)")


def parse_version_banner(text: str) -> Tuple[Optional[str], Optional[str]]:
    """``X --version`` output → (family, version); (None, None) when it is no compiler banner.

    ``gcc (Ubuntu 13.3.0-6ubuntu2~24.04.1) 13.3.0`` → ("gcc", "13.3.0");
    ``Ubuntu clang version 14.0.0-1ubuntu1`` → ("clang", "14.0.0").
    """
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    if not lines:
        return None, None
    first, whole = lines[0], "\n".join(lines[:6])
    m = _CLANG.search(whole)
    if m:
        return "clang", m.group(1)
    if "Intel" in whole and ("oneAPI" in whole or "icx" in first or "icpx" in first):
        m = _ANY.search(first.split(")")[-1]) or _ANY.search(first)
        return "icx", m.group(1) if m else None
    if first.startswith(("nvc++", "nvc ")) or "NVIDIA HPC" in whole:
        m = _ANY.search(first)
        return "nvhpc", m.group(1) if m else None
    if "Free Software Foundation" in whole or "(GCC)" in first or re.match(
            r"^(\S*/)?(gcc|g\+\+|c\+\+|cc)(-\d+)?\s", first):
        m = _TRAILING.search(first)
        return "gcc", m.group(1) if m else None
    m = _ANY.search(first)
    return "unknown", m.group(1) if m else None


def _which(command: str, env: Dict[str, str]) -> Optional[str]:
    if os.sep in command:
        return command if os.path.exists(command) else None
    return shutil.which(command, path=env.get("PATH", ""))


def describe(role: str, source: str, command: str, env: Dict[str, str],
             timeout: float = VERSION_TIMEOUT_S) -> CompilerFacts:
    """One compiler: resolve ``command`` on the target's PATH, run ``--version``, parse it."""
    facts = CompilerFacts(role=role, source=source, command=command, path=None, realpath=None,
                          family=None, version=None, major=None, banner="")
    word = command.split()[0] if command.strip() else ""
    path = _which(word, env) if word else None
    if path is None:
        where = "" if os.sep in word else " on the target's PATH"
        facts["run"] = ToolRun(path=None, ran=False, ok=False, timed_out=False,
                               result=f"not found: {word or '(empty)'}{where}")
        return facts
    facts["path"], facts["realpath"] = path, os.path.realpath(path)
    renv = dict(env)
    renv["LC_ALL"] = "C"
    r = proc.run([path, "--version"], timeout=timeout, env=renv)
    facts["run"] = ToolRun(path=path, ran=not r.error, ok=r.ok, timed_out=r.timed_out,
                           result=r.describe())
    text = r.stdout or r.stderr
    facts["banner"] = (text.strip().splitlines() or [""])[0][:300]
    if r.ok:
        family, version = parse_version_banner(text)
        facts["family"], facts["version"] = family, version
        if version:
            facts["major"] = int(version.split(".")[0])
    return facts


def gather(ctx: Any, done: Dict[str, Any]) -> HostCompilerFacts:
    env = ctx.env
    cc, cxx = env.get("CC") or "", env.get("CXX") or ""
    host = describe("nvcc host compiler", "CC" if cc else "PATH", cc or "gcc", env)
    cpp = describe("C++ compiler", "CXX" if cxx else "PATH", cxx or "c++", env)
    return HostCompilerFacts(nvcc_host=host, cxx=cpp, ccbin=cc or None)
