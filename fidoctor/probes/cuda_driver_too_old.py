"""cuda-driver-too-old: the NVIDIA driver supports an older CUDA than the target needs.

What: the highest CUDA version the driver supports (``cuDriverGetVersion`` of
the libcuda the target loads, else nvidia-smi's banner; the ``gpu`` section)
is older than what the target loads or builds with: torch's CUDA, the pip
``nvidia-cuda-runtime`` it ships, the ``libcudart.so.N`` cached modules
need, or the toolkit (nvcc) that builds the modules.
Why: a runtime or module newer than the driver cannot start. A different major is an
error: ``cudaErrorInsufficientDriver (35)`` at the first CUDA call (FI#5145:
modules linked to libcudart.so.13 under a 12.9 driver). The same major with a
newer minor is a warning: cubins load through minor-version compatibility,
but newer runtime APIs and any PTX JIT fail ("the provided PTX was compiled
with an unsupported toolchain", VLLM#47397).
Inconclusive without a driver (no GPU on this box): nothing to compare.
Fix: upgrade the driver, or build and run with a toolkit/runtime the driver
supports (CUDA_HOME; torch and its runtime wheel to match); modules built by
the newer toolkit are rebuilt after switching.

``data`` keys: driver_cuda, driver_version, needs ([{what, version, where}]),
kind (major | minor), affects (["*"] for a major gap: nothing runs).
"""

from __future__ import annotations

import re
from typing import Any, Dict, Iterable, List, Optional, Tuple

from fidoctor.model import Finding, Fix, ProbeInconclusive
from fidoctor.snapshot import Snapshot

ID = "cuda-driver-too-old"
REQUIRES = ("gpu", "toolkit", "target")
CAUSE = True
_CUDART = re.compile(r"^libcudart\.so\.(\d+)")


def _v(s: Optional[str]) -> Optional[Tuple[int, int]]:
    m = re.match(r"(\d+)\.(\d+)", s or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def needs(snap: Snapshot) -> List[Dict[str, Any]]:
    """Every CUDA version the target loads or builds with, and where it comes from."""
    out: List[Dict[str, Any]] = []
    target = snap.data("target")
    tcuda = (target.get("torch") or {}).get("cuda")
    if _v(tcuda):
        out.append({"what": "torch's CUDA", "version": tcuda, "where": "torch/version.py"})
    for name, p in sorted((target.get("packages") or {}).items()):
        if name.startswith("nvidia-cuda-runtime") and _v(p.get("version")):
            out.append({"what": f"pip {name}", "version": p["version"],
                        "where": p.get("location") or name})
    tk = snap.data("toolkit").get("toolkit") or {}
    if _v(tk.get("version")):
        out.append({"what": "the toolkit that builds the modules (nvcc)",
                    "version": tk["version"], "where": tk.get("path")})
    sec = snap.section("elf")
    majors: Dict[int, str] = {}
    for path, m in ((sec.data or {}).get("modules") or {}).items() if sec and sec.ok else []:
        for n in m.get("needed") or []:
            mm = _CUDART.match(n)
            if mm:
                majors.setdefault(int(mm.group(1)), path)
    for major, path in sorted(majors.items()):
        out.append({"what": f"cached modules linked to libcudart.so.{major}",
                    "version": f"{major}.0", "where": path})
    return out


def check(snap: Snapshot) -> Iterable[Finding]:
    g = snap.data("gpu")
    drv = g.get("cuda_driver_version")
    have = _v(drv)
    if have is None:
        why = "; ".join(g.get("absent_reasons") or []) or "the driver's CUDA version is unknown"
        raise ProbeInconclusive(f"no NVIDIA driver to compare against ({why})")
    vers = [(n, _v(n["version"]) or (0, 0)) for n in needs(snap)]
    major = [n for n, v in vers if v[0] > have[0]]
    minor = [n for n, v in vers if v[0] == have[0] and v > have]
    bad = major or minor
    if not bad:
        return
    kind = "major" if major else "minor"
    src = g.get("cuda_driver_version_source") or "the driver"
    evidence = [f"driver {g.get('driver_version') or '?'} supports CUDA {drv} ({src})"]
    evidence += [f"{n['what']}: CUDA {n['version']} ({n['where']})" for n in bad]
    if kind == "major":
        evidence.append("a runtime of a newer major fails at its first call with "
                        "cudaErrorInsufficientDriver (35)")
    else:
        evidence.append("same major: cubins load (minor-version compatibility), but newer "
                        "runtime APIs and PTX JIT need a newer driver")
    fixes = [Fix(description=f"Upgrade the NVIDIA driver to one supporting CUDA "
                 f"{max(n['version'] for n in bad)}", safety="caution"),
             Fix(description=f"Or build and run with CUDA {drv} or older (CUDA_HOME, and a "
                 "torch/runtime wheel built for it); then rebuild the cached modules",
                 safety="caution")]
    yield Finding(
        id=ID, severity="error" if kind == "major" else "warning", subject=str(drv),
        evidence=evidence, fixes=fixes,
        title=f"the driver supports CUDA {drv}, older than "
              + ", ".join(f"{n['what']} ({n['version']})" for n in bad[:3]),
        data={"driver_cuda": drv, "driver_version": g.get("driver_version"), "needs": bad,
              "kind": kind, "affects": ["*"] if kind == "major" else []})
