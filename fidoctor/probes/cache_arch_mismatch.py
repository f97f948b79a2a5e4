"""cache-arch-mismatch: cached modules were built for another GPU arch than this machine's.

What: a cached module's ``build.ninja`` ``-gencode=arch=compute_XX,code=sm_XX``
(else its workspace's arch dir, ``90a`` / ``75_80_89``) covers none of the
GPUs here (the ``gpu`` section's compute capability). Coverage follows the
CUDA binary rules: ``sm_90a`` runs only on 9.0, ``sm_100f`` on the 10.x
family from 10.0, plain ``sm_80`` on 8.x from 8.0. Inconclusive without a GPU.
Why: a cache copied from another machine, or built under a wrong
FLASHINFER_CUDA_ARCH_LIST, fails at the first kernel launch (``no kernel
image is available for execution on the device``) or, in a workspace the
target does not use, just wastes a cold start (FI#2579).
Fix: set FLASHINFER_CUDA_ARCH_LIST to the GPU's capability (or unset it) in
the server's environment, then let the modules rebuild for it.

``data`` keys: gpus ([compute capability]), modules ({name: [archs]}), source
(how each module's archs were read), arch_list (the target's
FLASHINFER_CUDA_ARCH_LIST or null), affects (the module names).
"""

from __future__ import annotations

import re
from typing import Dict, Iterable, List, Optional, Tuple

from fidoctor.flashinfer import nvcc as rules
from fidoctor.model import Finding, Fix, ProbeInconclusive
from fidoctor.probes._toolchain import fi_modules
from fidoctor.snapshot import Snapshot

ID = "cache-arch-mismatch"
REQUIRES = ("toolchain", "gpu")
CAUSE = True


def _arch(a: str) -> Optional[Tuple[int, int, str]]:
    m = re.fullmatch(r"(\d+)(\d)([af]?)", a)
    return (int(m.group(1)), int(m.group(2)), m.group(3)) if m else None


def covers(arch: str, cc: str) -> bool:
    """Whether SASS for ``arch`` (``90a``, ``100f``, ``80``) runs on a GPU of capability ``cc``."""
    a = _arch(arch)
    m = re.fullmatch(r"(\d+)\.(\d+)", cc)
    if a is None or m is None:
        return True  # unknown spelling: never claim a mismatch
    major, minor = int(m.group(1)), int(m.group(2))
    if a[2] == "a":
        return (a[0], a[1]) == (major, minor)
    return a[0] == major and minor >= a[1]


def check(snap: Snapshot) -> Iterable[Finding]:
    g = snap.data("gpu")
    ccs = sorted({d["compute_cap"] for d in g.get("gpus") or [] if d.get("compute_cap")})
    if not ccs:
        why = "; ".join(g.get("absent_reasons") or []) or "no compute capability reported"
        raise ProbeInconclusive(f"no GPU to compare the cached modules' archs with ({why})")
    bad: Dict[str, List[str]] = {}
    how: Dict[str, str] = {}
    for name, m in sorted(fi_modules(snap).items()):
        archs = m.get("gencode") or []
        src = "build.ninja -gencode"
        if not archs:
            archs, src = rules.archs_of_dir(m.get("workspace_arch")), "the workspace's arch dir"
        if not archs:
            continue
        if not all(any(covers(a, cc) for a in archs) for cc in ccs):
            bad[name], how[name] = archs, src
    if not bad:
        return
    env = snap.context.get("env") or {}
    arch_list = env.get("FLASHINFER_CUDA_ARCH_LIST")
    mods = fi_modules(snap)
    evidence = [f"GPU(s) here: compute capability {', '.join(ccs)}"]
    for name, archs in list(bad.items())[:6]:
        evidence.append(f"{mods[name]['path']}: built for "
                        f"{', '.join('sm_' + a for a in archs)} ({how[name]})")
    if len(bad) > 6:
        evidence.append(f"… and {len(bad) - 6} more module(s)")
    if arch_list:
        evidence.append(f"the target's FLASHINFER_CUDA_ARCH_LIST={arch_list!r}")
    want = " ".join(ccs)
    fixes = [Fix(description=f"Build for this GPU: FLASHINFER_CUDA_ARCH_LIST={want!r} (or unset "
                 "it) in the server's environment; the modules then rebuild for it",
                 commands=[f"export FLASHINFER_CUDA_ARCH_LIST='{want}'"], safety="caution")]
    yield Finding(
        id=ID, severity="warning", subject=", ".join(sorted(bad))[:200],
        evidence=evidence, fixes=fixes,
        title=f"{len(bad)} cached module(s) were built for another GPU arch than this "
              f"machine's (compute {', '.join(ccs)})",
        data={"gpus": ccs, "modules": bad, "source": how, "arch_list": arch_list,
              "affects": sorted(bad)})
