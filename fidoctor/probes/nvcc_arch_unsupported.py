"""nvcc-arch-unsupported: the toolkit's nvcc cannot build for an arch the target asks for.

What: the archs the target will build (FLASHINFER_CUDA_ARCH_LIST, else
TORCH_CUDA_ARCH_LIST for FlashInfer ≤ 0.2.5 (torch's cpp_extension reads it;
later releases ignore it), else the GPUs', else the cache's arch dirs; normalized
as FlashInfer does: SM 9.x → ``90a``, the arch FA3 needs) are refused by this
nvcc. The verdict is nvcc's own: ``nvcc --dryrun -gencode=arch=compute_X,
code=sm_X`` fails with ``nvcc fatal : Unsupported gpu architecture
'compute_90a'`` (CUDA 11.8). ``nvcc --list-gpu-arch`` is quoted beside it; it
lists base archs only. Where nvcc cannot be asked, the toolkit's known floor
(``compute_90a`` needs CUDA 12.0, ``100a`` 12.8, ``120f`` 12.9) decides.
Why: every JIT build passes these archs, so every build dies at its first
nvcc call (FI#1658; on SM 12.x FlashInfer even drops the arch and reports
"requires GPUs with sm75 or higher", VLLM#50705). Rebuilding or moving
modules aside changes nothing.
Fix: a toolkit new enough for the arch (``export CUDA_HOME=…``, advice: the
toolkit decides the runtime the modules need), or prebuilt kernels
(flashinfer-jit-cache); an arch list that names an arch the GPU does not
have is corrected in the server's environment.

A ``FLASHINFER_CUDA_ARCH_LIST`` FlashInfer's own parser refuses (0.3+: ``split(" ")`` then
``MAJOR.MINOR``; an empty value, ``;``, a newline, two spaces) fails ``import flashinfer``
itself: reported here too (``data.unparsable``), with the variable as the only fix.

``data`` keys: toolkit_path, nvcc_version, source, value, unsupported ([{arch,
entry, how, message}]), list_gpu_arch, suggested_cuda_home, missing (the refused archs, for
cuda-home-advice), affects (["*"]:
every build passes these archs).
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional

from fidoctor.flashinfer import nvcc as rules
from fidoctor.model import Finding, Fix, ProbeInconclusive
from fidoctor.probes._toolchain import (
    cuda_version,
    newer_toolkit_fixes,
    newer_toolkits,
    toolchain,
    toolkit,
    vtuple,
)
from fidoctor.snapshot import Snapshot

ID = "nvcc-arch-unsupported"
REQUIRES = ("toolchain", "toolkit")
CAUSE = True
NVCC_REFUSAL = "Unsupported gpu architecture"


def _verdict(arch: str, check: Optional[Dict[str, Any]], listed: Optional[List[str]],
             version: Optional[str]) -> Optional[Dict[str, Any]]:
    """{supported: bool|None, how, message} for one arch."""
    if check and check.get("ok") is True:
        return {"supported": True, "how": "nvcc --dryrun", "message": ""}
    if check and check.get("ok") is False and NVCC_REFUSAL in (check.get("message") or ""):
        return {"supported": False, "how": "nvcc --dryrun", "message": check["message"]}
    floor, have = rules.floor_of(arch), vtuple(version)
    if floor and have:
        ok = have >= floor
        return {"supported": ok, "how": "the toolkit's known floor",
                "message": "" if ok else f"compute_{arch} needs CUDA >= {floor[0]}.{floor[1]}; "
                f"this toolkit is CUDA {version}"}
    base = arch.rstrip("af")
    if listed is not None and base not in listed:
        return {"supported": False, "how": "nvcc --list-gpu-arch",
                "message": f"compute_{base} is not in nvcc --list-gpu-arch"}
    return {"supported": None, "how": "", "message": (check or {}).get("message", "")}


def _unparsable(req: Dict[str, Any], t: Dict[str, Any]) -> Finding:
    """FLASHINFER_CUDA_ARCH_LIST that FlashInfer's own parser refuses: no toolkit helps."""
    var, value = req.get("source"), req.get("value")
    return Finding(
        id=ID, severity="error", subject=str(var),
        title=f"FlashInfer cannot parse {var}={value!r}: `import flashinfer` raises ValueError, "
              "so nothing builds or loads",
        evidence=[f"{var}={value!r} in the target's environment",
                  f"FlashInfer splits it on single spaces and each entry on '.' "
                  f"(compilation_context.py, 0.3+): {req['unparsable']}"],
        fixes=[Fix(description=f"Correct {var} in the server's environment: archs separated by "
                   "single spaces, each MAJOR.MINOR with an optional suffix (e.g. '9.0a 10.0a'), "
                   "or unset it (then the GPUs decide)", safety="caution")],
        data={"toolkit_path": t.get("path"), "nvcc_version": None, "source": var,
              "value": value, "unsupported": [], "list_gpu_arch": None,
              "suggested_cuda_home": None, "missing": [], "unparsable": req["unparsable"],
              "affects": ["*"]})


def check(snap: Snapshot) -> Iterable[Finding]:
    tc = toolchain(snap)
    req = tc.get("archs") or {}
    t = toolkit(snap)
    if req.get("unparsable"):
        yield _unparsable(req, t)
        return
    if not t.get("exists") or not (t.get("nvcc") or {}).get("ok"):
        return  # no usable nvcc at all: cuda-toolkit-unusable speaks for it
    if not req.get("source"):
        env = snap.context.get("env")
        torch_list = env.get("TORCH_CUDA_ARCH_LIST") if isinstance(env, dict) else None
        named = (f"TORCH_CUDA_ARCH_LIST={torch_list!r} is set, but FlashInfer 0.2.6+ ignores it "
                 "(only FLASHINFER_CUDA_ARCH_LIST counts)" if torch_list else
                 "no FLASHINFER_CUDA_ARCH_LIST or TORCH_CUDA_ARCH_LIST in the target's environment")
        raise ProbeInconclusive(f"no arch to check: {named}, no GPU seen and no arch dir in the "
                                "cache")
    nv = tc.get("nvcc") or {}
    listed = nv.get("archs")
    version = cuda_version(snap)
    bad: List[Dict[str, Any]] = []
    unknown: List[str] = []
    for e in req.get("entries") or []:
        arch = e.get("arch")
        if arch is None:
            bad.append({"arch": None, "entry": e["entry"], "how": "FlashInfer's arch rules",
                        "message": e.get("note") or "FlashInfer rejects this entry"})
            continue
        v = _verdict(arch, (req.get("checks") or {}).get(arch), listed, version)
        if v is None or v["supported"] is None:
            unknown.append(arch)
        elif not v["supported"]:
            bad.append({"arch": arch, "entry": e["entry"], "how": v["how"],
                        "message": v["message"]})
    if not bad:
        if unknown:
            raise ProbeInconclusive(f"could not tell whether nvcc {version or '?'} builds "
                                    f"{', '.join('compute_' + a for a in unknown)} "
                                    f"({nv.get('archs_error') or 'nvcc not asked'})")
        return
    floors = [rules.floor_of(b["arch"]) for b in bad if b["arch"]]
    need = max([f for f in floors if f] or [(0, 0)])
    cands = newer_toolkits(snap, need) if need > (0, 0) else []
    evidence = [f"the target builds for {', '.join('compute_' + (e['arch'] or '?') for e in req['entries'])}"
                f" (from {req['source']}{'=' + repr(req['value']) if req.get('value') else ''})"]
    for b in bad:
        where = f"{b['how']}: " if b["how"] else ""
        evidence.append(f"{where}{b['message']}" + (f" (entry {b['entry']!r})"
                                                      if b["entry"] != b["arch"] else ""))
    if listed is not None:
        evidence.append(f"{nv.get('path')} --list-gpu-arch: "
                        + " ".join("compute_" + a for a in listed))
    elif nv.get("archs_error"):
        evidence.append(f"nvcc --list-gpu-arch: {nv['archs_error']}")
    fixes = newer_toolkit_fixes(cands)
    fixes.append(Fix(description="Install a CUDA toolkit new enough for these archs"
                     + (f" (CUDA >= {need[0]}.{need[1]})" if need > (0, 0) else "")
                     + ", or prebuilt kernels (flashinfer-jit-cache matching flashinfer-python)",
                     safety="caution"))
    if req.get("source") in ("FLASHINFER_CUDA_ARCH_LIST", "TORCH_CUDA_ARCH_LIST"):
        fixes.append(Fix(description=f"If the GPU is not one of these archs, correct "
                         f"{req['source']} in the server's environment", safety="caution"))
    names = ", ".join("compute_" + (b["arch"] or b["entry"]) for b in bad)
    yield Finding(
        id=ID, severity="error", subject=t.get("path", ""), evidence=evidence, fixes=fixes,
        title=f"nvcc {version or '?'} ({t.get('path')}) cannot build {names}: every JIT "
              "build will fail",
        data={"toolkit_path": t.get("path"), "nvcc_version": version,
              "source": req.get("source"), "value": req.get("value"), "unsupported": bad,
              "list_gpu_arch": listed,
              "suggested_cuda_home": cands[-1]["path"] if cands else None,
              "missing": ["compute_" + (b["arch"] or b["entry"]) for b in bad],
              "affects": ["*"]})
