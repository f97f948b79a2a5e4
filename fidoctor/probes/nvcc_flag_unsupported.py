"""nvcc-flag-unsupported: FlashInfer passes nvcc a flag this nvcc does not know.

What: a flag in ``cuda_cflags`` of a cached ``build.ninja`` written by the
target's FlashInfer version, or in FLASHINFER_EXTRA_CUDAFLAGS /
NVCC_PREPEND_FLAGS / NVCC_APPEND_FLAGS of the target's environment (e.g.
0.7.x's ``--compress-mode=size``, CUDA 12.8+) is not an option ``nvcc
--help`` documents (read once per nvcc, cached), and nvcc itself refuses
it (``nvcc FLAG --dryrun``: ``Unknown option``; some accepted flags such as
``-Xfatbin`` are missing from ``--help``).
Flags FlashInfer adds only for new enough nvcc (``-static-global-template-
stub``, 12.8+) are not held against an older one.
Why: nvcc stops at the first unknown option (``nvcc fatal : Unknown option
'-compress-mode'``) before compiling anything, so every build of those
modules fails; moving them aside rebuilds into the same error.
Fix: build with a toolkit that knows the flag (``CUDA_HOME``), or a FlashInfer
release that supports this toolkit; flags that come from
FLASHINFER_EXTRA_CUDAFLAGS are removed there.

``data`` keys: nvcc, nvcc_version, unknown ({flag: [module names]}),
from_env (the environment variables that pass an unknown flag:
FLASHINFER_EXTRA_CUDAFLAGS, NVCC_PREPEND_FLAGS, NVCC_APPEND_FLAGS),
suggested_cuda_home, affects (the module names; ["*"] when a flag comes from
the environment, which every build gets).
"""

from __future__ import annotations

from typing import Dict, Iterable, List

from fidoctor.flashinfer import nvcc as rules
from fidoctor.model import Finding, Fix, ProbeInconclusive
from fidoctor.probes._toolchain import (
    cuda_version,
    fi_modules,
    newer_toolkit_fixes,
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
    envf = tc.get("env_flags") or {}
    sources = dict(mods, **{f"${v}": {"tokens": toks} for v, toks in envf.items()})
    if not sources:
        return  # no build.ninja of this FlashInfer and no flags from the environment
    t = toolkit(snap)
    nv = tc.get("nvcc") or {}
    if not (t.get("nvcc") or {}).get("ok"):
        return  # no usable nvcc: cuda-toolkit-unusable speaks for it
    options = nv.get("options")
    if options is None:
        raise ProbeInconclusive("nvcc --help could not be read: "
                                f"{nv.get('options_error') or 'not asked'}")
    version = cuda_version(snap)
    have = vtuple(version)
    checks = tc.get("flag_checks") or {}
    unknown: Dict[str, List[str]] = {}
    messages: Dict[str, str] = {}
    unsure: List[str] = []
    for name, m in sorted(sources.items()):
        for tok in m.get("tokens") or []:
            opt = rules.option_name(tok) or tok
            gate = rules.VERSION_GATED.get(opt)
            if gate and (have is None or have < gate) and not name.startswith("$"):
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
            raise ProbeInconclusive(f"nvcc could not be asked about "
                                    f"{', '.join(sorted(set(unsure))[:5])} (not in --help; "
                                    "dryrun not run)")
        return
    from_env = sorted({n[1:] for ns in unknown.values() for n in ns if n.startswith("$")})
    affected = sorted({n for ns in unknown.values() for n in ns if not n.startswith("$")})
    cands = [c for c in newer_toolkits(snap, have or (0, 0)) if vtuple(c.get("version")) != have]
    evidence = [f"{nv.get('path')} (CUDA {version or '?'}) --help documents {len(options)} "
                "option names; it does not list:"]
    for opt, names in sorted(unknown.items()):
        mods_n = [n for n in names if not n.startswith("$")]
        where = [f"set in {n[1:]}" for n in names if n.startswith("$")]
        if mods_n:
            where.append(f"passed by {len(mods_n)} module(s), e.g. "
                         f"{mods[mods_n[0]]['path']}/build.ninja")
        evidence.append(f"  {opt}: {'; '.join(where)}; nvcc --dryrun with it: {messages[opt]}")
    fixes = []
    if from_env:
        env_opts = sorted(o for o, ns in unknown.items() if any(n.startswith("$") for n in ns))
        fixes.append(Fix(description=f"Remove {', '.join(env_opts)} from "
                         f"{', '.join(from_env)} in the server's environment", safety="safe"))
    fixes += newer_toolkit_fixes(cands)
    fixes.append(Fix(description="Use a toolkit this FlashInfer release supports, or a "
                     "FlashInfer release that supports this toolkit", safety="caution"))
    flags = ", ".join(sorted(unknown))
    parts = ([f"{len(affected)} module build(s)"] if affected else []) + \
        (["every build (environment)"] if from_env else [])
    what = " and ".join(parts)
    yield Finding(
        id=ID, severity="error", subject=nv.get("path", ""), evidence=evidence, fixes=fixes,
        title=f"nvcc {version or '?'} does not know {flags}, which {what} pass(es) to it",
        data={"nvcc": nv.get("path"), "nvcc_version": version,
              "unknown": {o: [n for n in ns if not n.startswith("$")]
                          for o, ns in unknown.items()},
              "from_env": from_env, "toolkit_path": t.get("path"),
              "suggested_cuda_home": cands[-1]["path"] if cands else None,
              "missing": sorted(unknown), "affects": ["*"] if from_env else affected})
