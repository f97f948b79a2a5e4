"""flashinfer-package-mismatch: flashinfer-python, flashinfer-cubin and flashinfer-jit-cache disagree.

What: the target's installed versions (importlib.metadata, in the target)
of flashinfer-cubin (must equal flashinfer-python's) and flashinfer-jit-cache
(equal, or ``<version>+cuXXX``), judged by FlashInfer's own check as the
installed version spells it (``flashinfer/jit/env.py``, quoted).
Why: 0.4–0.7.0 raise at import (``flashinfer-cubin version (…) does not match
flashinfer version (…)``); 0.7.2 warns ``Ignoring incompatible …`` and
downloads cubins / JIT-compiles kernels the prebuilt package was meant to
provide (a surprise 10-minute start). With ``FLASHINFER_DISABLE_VERSION_CHECK``
set, kernels built for another version load silently: "async CUDA errors,
illegal memory accesses" (tokenspeed PR#284). That is the worst case: error.
Also: apache-tvm-ffi outside flashinfer-python's own ``Requires-Dist`` range
(0.4+, read in its METADATA). Every JIT module compiles against tvm-ffi's C++
headers and links its library, so another API breaks every build: FlashInfer
0.4.1 pins ``apache-tvm-ffi==0.1.0b15``, which PyPI no longer serves, and with
0.1.0 (what ``--no-deps`` installs end up with) every module fails in
``csrc/tvm_ffi_utils.h`` (``class "tvm::ffi::Object" has no member "ndim"``).
That finding is a cause (``data["affects"]: ["*"]``: fidoctor/causes.py).
Fix: install the matching version of the extra package (or remove it), and
unset FLASHINFER_DISABLE_VERSION_CHECK; for tvm-ffi, the version FlashInfer
requires, or a FlashInfer release whose requirement the index can meet.
"""

from __future__ import annotations

import shlex
from typing import Any, Dict, Iterable, List

from fidoctor.model import Finding, Fix
from fidoctor.snapshot import Snapshot

ID = "flashinfer-package-mismatch"
REQUIRES = ("target", "fi_install")
CAUSE = True  # only its requirement findings carry data["affects"]


def _unmet(have: str, spec: str) -> bool:
    try:
        from packaging.specifiers import InvalidSpecifier, SpecifierSet
        from packaging.version import InvalidVersion, Version

        return not SpecifierSet(spec).contains(Version(have), prereleases=True)
    except (ImportError, InvalidSpecifier, InvalidVersion):
        return False


def _requirements(fi: str, pkgs: Dict[str, Any], inst: Dict[str, Any],
                  python: str) -> Iterable[Finding]:
    for dep, spec in sorted((inst.get("requires") or {}).items()):
        info = pkgs.get(dep) or {}
        have = info.get("version")
        if not have or not _unmet(have, spec):
            continue
        yield Finding(
            id=ID, severity="error", subject=dep,
            title=f"{dep} {have} does not meet flashinfer-python {fi}'s requirement "
            f"{dep}{spec}: FlashInfer's JIT modules compile against its C++ headers and link "
            "its library, so they may not build or load",
            evidence=[f"{python}: {dep} {have} (installed at {info.get('location', '?')})",
                      f"{inst.get('metadata')}: Requires-Dist: {dep}{spec}",
                      "pip installs it so only with --no-deps or a forced version "
                      f"(`{python} -m pip check` names it too)"],
            fixes=[Fix(description=f"Install the {dep} this FlashInfer requires (when the "
                       "package index still serves it)",
                       commands=[f"{python} -m pip install '{dep}{spec}'"], safety="caution"),
                   Fix(description="Or move to a FlashInfer release whose requirement the index "
                       "can meet (a different version: its kernels are rebuilt)",
                       commands=[f"{python} -m pip install -U flashinfer-python"],
                       safety="risky")],
            data={"package": dep, "version": have, "flashinfer": fi, "requirement": spec,
                  "check_disabled": False, "ignored_by_flashinfer": False, "affects": ["*"]})


def _matches(pkg: str, version: str, fi: str) -> bool:
    if pkg == "flashinfer-jit-cache":
        return version == fi or version.startswith(fi + "+")
    return version == fi


def check(snap: Snapshot) -> Iterable[Finding]:
    t = snap.data("target")
    pkgs: Dict[str, Any] = t.get("packages", {})
    fi = (pkgs.get("flashinfer-python") or pkgs.get("flashinfer") or {}).get("version")
    if not fi or fi == "0.0.0+unknown":
        return
    inst = snap.data("fi_install")
    env = snap.context.get("env") or {}
    disabled = bool(env.get("FLASHINFER_DISABLE_VERSION_CHECK"))
    # quoted once here: it goes into commands a shell runs as printed (a venv under a path
    # with a space; the evidence lines say it quoted as well, which reads the same)
    python = shlex.quote(t.get("python") or snap.context.get("python") or "python")
    yield from _requirements(fi, pkgs, inst, python)
    for pkg in ("flashinfer-cubin", "flashinfer-jit-cache"):
        have = (pkgs.get(pkg) or {}).get("version")
        if not have or _matches(pkg, have, fi):
            continue
        ignores = bool((inst.get("ignores") or {}).get(pkg))
        quote = [f"{c['file']}:{c['line']}: {c['text']}" for c in inst.get("checks", [])
                 if ("cubin" in pkg and ("cubin" in c["text"] or "package_version !=" in c["text"]))
                 or ("jit" in pkg and ("jit_cache" in c["text"] or "+" in c["text"]
                                       or "package_version !=" in c["text"]))][:4]
        evidence = [f"{python}: flashinfer-python {fi}, {pkg} {have} "
                    f"(installed at {(pkgs.get(pkg) or {}).get('location', '?')})"]
        evidence += [f"FlashInfer's own check: {q}" for q in quote] or [
            "FlashInfer's check not found in this version's jit/env.py"]
        if disabled:
            sev = "error"
            title = (f"{pkg} {have} does not match flashinfer-python {fi}, and "
                     "FLASHINFER_DISABLE_VERSION_CHECK is set: kernels of another version load "
                     "silently (wrong results, illegal memory accesses)")
            evidence.append(f"FLASHINFER_DISABLE_VERSION_CHECK={env['FLASHINFER_DISABLE_VERSION_CHECK']!r}"
                            " in the target's environment skips that check")
        elif ignores:
            sev = "warning"
            what = ("cubins are downloaded on first use" if pkg == "flashinfer-cubin"
                    else "its kernels are JIT-compiled instead")
            title = (f"{pkg} {have} does not match flashinfer-python {fi}: FlashInfer {fi} "
                     f"ignores it ('Ignoring incompatible {pkg} package'), so {what}")
        else:
            sev = "error"
            title = (f"{pkg} {have} does not match flashinfer-python {fi}: FlashInfer raises at "
                     "import ('does not match flashinfer version')")
        want = f"{pkg}=={fi}"
        fixes: List[Fix] = []
        if disabled:
            fixes.append(Fix(description="Stop skipping FlashInfer's version check",
                             commands=["unset FLASHINFER_DISABLE_VERSION_CHECK"],
                             safety="safe"))
        if pkg == "flashinfer-jit-cache":
            fixes.append(Fix(
                description="Install the jit-cache built for this flashinfer-python (from "
                "FlashInfer's index for your CUDA, e.g. cu129)",
                commands=[f"{python} -m pip install '{want}' --index-url "
                          "https://flashinfer.ai/whl/cu129"], safety="caution"))
        else:
            fixes.append(Fix(description="Install the matching flashinfer-cubin",
                             commands=[f"{python} -m pip install '{want}'"], safety="caution"))
        fixes.append(Fix(description=f"Or remove {pkg} (FlashInfer then downloads or compiles "
                         "what it needs)", commands=[f"{python} -m pip uninstall -y {pkg}"],
                         safety="caution"))
        yield Finding(id=ID, severity=sev, subject=pkg, title=title, evidence=evidence,
                      fixes=fixes,
                      data={"package": pkg, "version": have, "flashinfer": fi,
                            "check_disabled": disabled, "ignored_by_flashinfer": ignores})
