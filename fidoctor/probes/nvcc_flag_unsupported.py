"""nvcc-flag-unsupported: FlashInfer passes nvcc a flag this nvcc does not know.

What: a flag in ``cuda_cflags`` of a cached ``build.ninja`` written by the
target's FlashInfer version (e.g. 0.7.x's ``--compress-mode=size``, CUDA 12.8+)
is not an option ``nvcc --help`` documents (read once per nvcc, cached), and
nvcc itself refuses it (``nvcc FLAG --dryrun``: ``Unknown option``; some
accepted flags such as ``-Xfatbin`` are missing from ``--help``).
Flags FlashInfer adds only for new enough nvcc (``-static-global-template-
stub``, 12.8+) are not held against an older one.
Why: nvcc stops at the first unknown option (``nvcc fatal : Unknown option
'-compress-mode'``) before compiling anything, so every build of those
modules fails; moving them aside rebuilds into the same error.
Fix: build with a toolkit that knows the flag (``CUDA_HOME``), or a FlashInfer
release that supports this toolkit; flags that come from
FLASHINFER_EXTRA_CUDAFLAGS are removed there.

``data`` keys: nvcc, nvcc_version, unknown ({flag: [module names]}),
from_env (unknown flags also set in FLASHINFER_EXTRA_CUDAFLAGS),
suggested_cuda_home, affects (the module names).
"""

from __future__ import annotations

from typing import Dict, Iterable, List

from fidoctor.flashinfer import nvcc as rules
from fidoctor.model import Finding, Fix, ProbeInconclusive
from fidoctor.probes._facts import quote
from fidoctor.probes._toolchain import (
    cuda_version,
    fi_modules,
    newer_toolkits,
    toolchain,
    toolkit,
    vtuple,
)
from fidoctor.snapshot import Snapshot

ID = "nvcc-flag-unsupported"
REQUIRES = ("toolchain", "toolkit")
CAUSE = True


def check(snap: Snapshot) -> Iterable[Finding]:
    tc = toolchain(snap)
    mods = {n: m for n, m in fi_modules(snap).items() if m.get("options")}
    if not mods:
        return  # no build.ninja of this FlashInfer to read its flags from
    t = toolkit(snap)
    nv = tc.get("nvcc") or {}
    if not (t.get("nvcc") or {}).get("ok"):
        return  # no usable nvcc: cuda-toolkit-unusable speaks for it
    options = nv.get("options")
    if options is None:
        raise ProbeInconclusive(f"nvcc --help could not be read: {nv.get('options_error') or 'not asked'}")
    version = cuda_version(snap)
    have = vtuple(version)
    checks = tc.get("flag_checks") or {}
    unknown: Dict[str, List[str]] = {}
    messages: Dict[str, str] = {}
    unsure: List[str] = []
    for name, m in sorted(mods.items()):
        for tok in m.get("tokens") or []:
            opt = rules.option_name(tok) or tok
            gate = rules.VERSION_GATED.get(opt)
            if gate and (have is None or have < gate):
                continue  # FlashInfer passes it only to a newer nvcc
            if rules.known_option(opt, options):
                continue
            c = checks.get(tok) or {}
            if c.get("ok") is False and "Unknown option" in (c.get("message") or ""):
                unknown.setdefault(opt, []).append(name)
                messages[opt] = c["message"]
            elif c.get("ok") is not True:
                unsure.append(tok)
    if not unknown:
        if unsure:
            raise ProbeInconclusive(f"nvcc could not be asked about {', '.join(sorted(set(unsure))[:5])}"
                                    " (not in --help; dryrun not run)")
        return
    affected = sorted({n for ns in unknown.values() for n in ns})
    extra = (snap.context.get("env") or {}).get("FLASHINFER_EXTRA_CUDAFLAGS", "")
    from_env = [f for f in unknown if any(rules.option_name(x) == f for x in extra.split())]
    cands = [c for c in newer_toolkits(snap, have or (0, 0)) if vtuple(c.get("version")) != have]
    evidence = [f"{nv.get('path')} (CUDA {version or '?'}) --help documents {len(options)} "
                "option names; it does not list:"]
    for opt, names in sorted(unknown.items()):
        evidence.append(f"  {opt}: passed by {len(names)} module(s), e.g. "
                        f"{mods[names[0]]['path']}/build.ninja; nvcc --dryrun with it: "
                        f"{messages[opt]}")
    if from_env:
        evidence.append(f"FLASHINFER_EXTRA_CUDAFLAGS={extra!r} adds {', '.join(from_env)}")
    fixes = []
    if from_env:
        fixes.append(Fix(description=f"Remove {', '.join(from_env)} from "
                         "FLASHINFER_EXTRA_CUDAFLAGS in the server's environment", safety="safe"))
    if cands:
        c = cands[-1]
        fixes.append(Fix(id="cuda-home-advice", safety="caution",
                         description=f"Build with the newer toolkit {c['path']} (CUDA "
                         f"{c.get('version')}); check its runtime against torch's first",
                         commands=[f"export CUDA_HOME={quote(c['path'])}"]))
    fixes.append(Fix(description="Use a toolkit this FlashInfer release supports, or a "
                     "FlashInfer release that supports this toolkit", safety="caution"))
    flags = ", ".join(sorted(unknown))
    yield Finding(
        id=ID, severity="error", subject=nv.get("path", ""), evidence=evidence, fixes=fixes,
        title=f"nvcc {version or '?'} does not know {flags}, which FlashInfer passes to "
              f"{len(affected)} module build(s)",
        data={"nvcc": nv.get("path"), "nvcc_version": version, "unknown": unknown,
              "from_env": from_env, "toolkit_path": t.get("path"),
              "suggested_cuda_home": cands[-1]["path"] if cands else None,
              "missing": sorted(unknown), "affects": affected})
