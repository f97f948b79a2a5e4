"""host-compiler-unsupported: nvcc will reject the host compiler it is given.

What: the toolkit's ``crt/host_config.h`` reaches an ``#error`` for the host
compiler nvcc would use (``-ccbin $CC`` when CC is set, FlashInfer forwards CC
and not CXX; else the ``gcc`` of nvcc.profile's PATH or the target's PATH).
The guards are the real header's ``#if`` lines evaluated with that compiler's
real predefined macros (``-dM -E``): for CUDA 11.8 and gcc 12 that is line 132,
``#error -- unsupported GNU version! gcc versions later than 11 are not
supported!`` (clang, ICC, xlC, MSVC guards alike). ``-allow-unsupported-
compiler`` in FLASHINFER_EXTRA_CUDAFLAGS / NVCC_APPEND_FLAGS /
NVCC_PREPEND_FLAGS skips the check, as nvcc does.
Why: every JIT build fails in its first nvcc call; setting ``CXX`` alone
does not help (SGL PR#35683), and moving modules aside rebuilds into the
same error.
Fix: ``CC``/``CXX`` pointing at an installed compiler that passes the same
guards (fix id ``set-host-compiler``: fidoctor's env file; only offered for a
compiler found here and checked against this header), or an installed toolkit
whose own host_config.h accepts the compiler (``CUDA_HOME``, advice).

``data`` keys: compiler ({path, source, via, family, version}), host_config,
error ({line, text}), suggested ({cc, cxx}) or null, candidates_checked,
suggested_cuda_home (an installed toolkit accepting the compiler) or null,
env ({"CC", "CXX"} for the env file, when a compiler fits), affects (["*"]).
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterable, List, Optional

from fidoctor.flashinfer import hostconfig as hc
from fidoctor.model import Finding, Fix, ProbeInconclusive
from fidoctor.probes._facts import quote
from fidoctor.probes._toolchain import toolchain, toolkit
from fidoctor.snapshot import Snapshot

ID = "host-compiler-unsupported"
REQUIRES = ("toolchain",)
CAUSE = True


def _fits(lines: List[List], macros: Dict[str, str]) -> Optional[bool]:
    r = hc.first_error(lines, dict(macros, __CUDACC__="1"))
    if r["error"]:
        return False
    return None if r["unknown"] else True


def check(snap: Snapshot) -> Iterable[Finding]:
    tc = toolchain(snap)
    hcfg, host = tc.get("host_config"), tc.get("host")
    t = toolkit(snap)
    if not t.get("exists"):
        return  # cuda-toolkit-unusable speaks for a toolkit that is not there
    if not hcfg:
        raise ProbeInconclusive(f"no crt/host_config.h under {t.get('path')}")
    if not host:
        raise ProbeInconclusive("the host compiler was not gathered")
    comp = host.get("compiler") or {}
    if host.get("macros") is None:
        raise ProbeInconclusive(f"cannot ask the host compiler {comp.get('command')} for its "
                                f"macros: {host.get('macros_error')}")
    if host.get("allow_unsupported"):
        return  # the user chose -allow-unsupported-compiler; nvcc skips the check
    r = hc.first_error(hcfg["lines"], dict(host["macros"], __CUDACC__="1"))
    err = r["error"]
    if not err:
        if r["unknown"]:
            raise ProbeInconclusive("host_config.h guards undecidable: " + "; ".join(r["unknown"][:3]))
        return
    fits: List[Dict[str, Any]] = [c for c in host.get("candidates") or []
                                  if _fits(hcfg["lines"], c["macros"]) is True]
    fits.sort(key=lambda c: (not c.get("cxx"), c["cc"]))
    best = fits[0] if fits else None
    label = f"{comp.get('family') or 'compiler'} {comp.get('version') or ''}".strip()
    evidence = [f"nvcc's host compiler: {comp.get('path')} ({label}; {comp.get('via')})",
                f"{hcfg['path']}:{err['line']}: {err['text'][:200]}",
                "no -allow-unsupported-compiler in FLASHINFER_EXTRA_CUDAFLAGS, NVCC_APPEND_FLAGS "
                "or NVCC_PREPEND_FLAGS"]
    if host.get("candidates"):
        evidence.append("installed compilers checked against the same guards: " + ", ".join(
            f"{os.path.basename(c['cc'])} ({'fits' if c in fits else 'rejected'})"
            for c in host["candidates"][:8]))
    fixes = []
    env: Dict[str, str] = {}
    if best:
        env = {"CC": best["cc"]}
        if best.get("cxx"):
            env["CXX"] = best["cxx"]
        fixes.append(Fix(id="set-host-compiler", safety="safe",
                         description=f"Build with {best['cc']}, which this toolkit's "
                         "host_config.h accepts (FlashInfer passes CC to nvcc as -ccbin)",
                         commands=[f"export {k}={quote(v)}" for k, v in env.items()]))
    tks = [t for t in host.get("other_toolkits") or [] if t.get("accepts")]
    if tks:
        tk = sorted(tks, key=lambda t: str(t.get("version")))[-1]
        evidence.append(f"{tk['path']}/…/crt/host_config.h accepts {comp.get('path')}")
        fixes.append(Fix(id="cuda-home-advice", safety="caution",
                         description=f"Or build with the toolkit {tk['path']} (CUDA "
                         f"{tk.get('version')}), which accepts this compiler; check its runtime "
                         "against torch's first",
                         commands=[f"export CUDA_HOME={quote(tk['path'])}"]))
    fixes.append(Fix(description="Install a host compiler this toolkit supports (e.g. an "
                     "older gcc), or use a newer CUDA toolkit that supports this one",
                     safety="caution"))
    yield Finding(
        id=ID, severity="error", subject=comp.get("path") or "",
        evidence=evidence, fixes=fixes,
        title=f"nvcc {t.get('version') or '?'} rejects the host compiler {comp.get('path')} "
              f"({label}): every JIT build will fail",
        data={"compiler": comp, "host_config": hcfg["path"], "error": err,
              "suggested": {"cc": best["cc"], "cxx": best.get("cxx")} if best else None,
              "candidates_checked": [c["cc"] for c in host.get("candidates") or []],
              "env": env, "toolkit_path": t.get("path"), "missing": ["host compiler"],
              "suggested_cuda_home": tk["path"] if tks else None, "affects": ["*"]})
