"""cuda-version-skew: nvcc is newer than the CUDA runtime the target loads, or another major.

What: (a) the toolkit FlashInfer builds with (``nvcc --version``) has the same
major as the libcudart the target loads but a newer minor — the seed's nvcc
12.9 against pip's 12.4.127; (b) torch's CUDA major (``torch/version.py``)
differs from nvcc's major.
Why: (a) code compiled by nvcc ≥12.5 calls runtime APIs the older runtime
lacks — CUTLASS/TRT-LLM TMA code calls ``cudaGetDriverEntryPointByVersion``
(new in 12.5) — so modules fail to load with ``undefined symbol``. It is an
*error* when a cached module already needs a missing symbol, or when the
runtime lacks ``cudaGetDriverEntryPointByVersion`` and nvcc is ≥12.5 (the
next sm90/TMA build will need it); a *warning* otherwise. (b) modules then
link ``libcudart.so.<nvcc major>`` while torch uses another runtime: two
runtimes in one process, and a driver that must support the newer one
(FI#5145: ``cudaErrorInsufficientDriver``).
Fix: as for cudart-missing-symbol (``preload-cudart``, ``upgrade-pip-cudart``,
a toolkit no newer than the runtime, ``replace-pip-cudart``); for (b) a
toolkit of torch's major (``export CUDA_HOME=…``) or a torch built for nvcc's.

``data`` keys: kind ("minor" or "major"), nvcc_version, nvcc_version_source,
torch_cuda, lacking (symbols the toolkit's runtime exports and the loaded one
does not, at most 20), needs_newer (modules that already miss symbols), plus
for kind=minor the runtime keys of cudart-missing-symbol (runtime_path,
runtime_version, runtime_version_source, runtime_via, provider_path,
provider_version, cuda_lib_path, pip_cudart_path, pip_package, pip_version,
toolkit_path, toolkit_version, python, upgrade_spec, loaded_source).
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Tuple

from fidoctor.flashinfer import cudart as rules
from fidoctor.model import Finding, Fix
from fidoctor.probes._facts import quote
from fidoctor.probes._runtime import (
    lib_label,
    runtime_data,
    runtime_fixes,
    toolkit_copy,
)
from fidoctor.snapshot import Snapshot

ID = "cuda-version-skew"
REQUIRES = ("toolkit", "cudart")


def _runtime(cud: Dict[str, Any], major: int) -> Optional[Dict[str, Any]]:
    """The loaded libcudart of nvcc's major (what its modules bind to), else the first."""
    libs = cud.get("libraries") or {}
    loaded = cud.get("loaded") or []
    pick = next((lib for lib in loaded if rules.soname_major(lib.get("soname")) == major),
                loaded[0] if loaded else None)
    if pick is None:
        return None
    return dict(libs.get(pick["path"], {}), via=pick.get("via", ""))


def _modules_missing(snap: Snapshot) -> List[str]:
    cud, elf = snap.data("cudart"), snap.data("elf")
    return [so_path for so_path, _, _ in rules.modules_missing(
        elf.get("modules") or {}, cud.get("loaded") or [], cud.get("own") or {},
        cud.get("libraries") or {})]


def check(snap: Snapshot) -> Iterable[Finding]:
    tk, cud = snap.data("toolkit"), snap.data("cudart")
    tkd = tk.get("toolkit") or {}
    nv = rules.major_minor(tkd.get("version"))
    if not nv:
        return
    runtime = _runtime(cud, nv[0])
    rv = rules.major_minor(runtime.get("version")) if runtime else None
    exact = runtime and runtime.get("version_source", "").startswith(("package", "file",
                                                                      "toolkit"))
    if runtime and rv and exact and rv[0] == nv[0] and nv > rv:
        yield _minor(snap, tkd, runtime, nv, rv)
    torch_cuda = (snap.data("target").get("torch") or {}).get("cuda")
    tv = rules.major_minor(torch_cuda)
    if torch_cuda and tv and tv[0] != nv[0]:
        yield _major(snap, tkd, torch_cuda, tv, nv)


def _minor(snap: Snapshot, tkd: Dict[str, Any], runtime: Dict[str, Any], nv, rv) -> Finding:
    cud = snap.data("cudart")
    libs = cud.get("libraries") or {}
    tkcopy = toolkit_copy(cud, snap.data("toolkit"), runtime.get("soname"))
    have = runtime.get("exports") or {}
    lacking = sorted(set((tkcopy or {}).get("exports") or {}) - set(have))
    needs_newer = _modules_missing(snap)
    byver_missing = rules.BYVERSION not in have and "exports" in runtime
    future = byver_missing and nv >= rules.BYVERSION_SINCE
    evidence = [
        f"nvcc {tkd.get('version')} (from {tkd.get('version_source')}) at {tkd.get('path')}",
        f"the target loads {lib_label(runtime)}",
        f"chosen by: {runtime.get('via')}",
    ]
    if lacking:
        evidence.append(f"{len(lacking)} symbol(s) in the toolkit's libcudart are missing from "
                        f"the loaded one: {', '.join(lacking[:6])}"
                        f"{' …' if len(lacking) > 6 else ''}")
    if needs_newer:
        evidence.append(f"{len(needs_newer)} cached module(s) already need symbols it lacks: "
                        f"{', '.join(needs_newer[:3])}{' …' if len(needs_newer) > 3 else ''}")
    if future:
        evidence.append(f"the loaded runtime has no {rules.BYVERSION}; with nvcc ≥12.5 "
                        f"{_who_calls(snap)} call it")
    provider = tkcopy if tkcopy and rules.BYVERSION in (tkcopy.get("exports") or {}) else None
    if provider is None:
        provider = next((lib for lib in libs.values() if rules.major_minor(lib.get("version"))
                         and rules.major_minor(lib.get("version")) >= nv
                         and lib.get("soname") == runtime.get("soname")), None)
    data = runtime_data(snap, runtime, provider)
    data.update(kind="minor", nvcc_version=tkd.get("version"),
                nvcc_version_source=tkd.get("version_source"),
                torch_cuda=(snap.data("target").get("torch") or {}).get("cuda"),
                lacking=lacking[:20], needs_newer=needs_newer)
    error = bool(needs_newer) or future
    return Finding(
        id=ID, severity="error" if error else "warning", subject="nvcc-vs-runtime",
        title=f"nvcc {nv[0]}.{nv[1]} is newer than the CUDA runtime the target loads "
        f"({runtime.get('version')}); modules it builds "
        f"{'will fail to load' if error else 'may need symbols that runtime lacks'}",
        evidence=evidence, fixes=runtime_fixes(snap, data, ID), data=data)


def _who_calls(snap: Snapshot) -> str:
    """Which FlashInfer modules call ByVersion with nvcc 12.5+ (flashinfer-jit.md)."""
    pkgs = snap.data("target").get("packages") or {}
    fi = (pkgs.get("flashinfer-python") or pkgs.get("flashinfer") or {}).get("version")
    t = rules.version_tuple(fi)
    if t and (0, 2, 0) <= t[:3] < (0, 2, 5):
        return f"FlashInfer {fi}'s FA3/sm90 modules (CUTLASS 3.6 TMA code)"
    if t:
        return (f"FlashInfer {fi}'s TRT-LLM modules (deep_gemm, fp4/fp8 quantization, "
                "fused_moe)")
    return "CUTLASS (FlashInfer 0.2.0–0.2.4 FA3) and TRT-LLM (deep_gemm, fp8, fused_moe) modules"


def _major(snap: Snapshot, tkd: Dict[str, Any], torch_cuda: str, tv: Tuple[int, int],
           nv) -> Finding:
    same = [t for t in snap.data("toolkit").get("installed") or []
            if (rules.major_minor(t.get("version")) or (0, 0))[0] == tv[0] and t.get("has_nvcc")]
    fixes: List[Fix] = []
    if same:
        fixes.append(Fix(safety="caution",
                         description=f"Build with a CUDA {tv[0]} toolkit, matching torch, "
                         "then rebuild the modules the other toolkit built",
                         commands=[f"export CUDA_HOME={quote(same[0]['path'])}"]))
    else:
        fixes.append(Fix(safety="caution",
                         description=f"Install a CUDA {tv[0]}.{tv[1]} toolkit (matching torch) "
                         "and build with it",
                         commands=[f"apt-get install cuda-toolkit-{tv[0]}-{tv[1]}",
                                   f"export CUDA_HOME=/usr/local/cuda-{tv[0]}.{tv[1]}"]))
    fixes.append(Fix(safety="caution",
                     description=f"Or install a torch built for CUDA {nv[0]} (cu{nv[0]}x wheels)",
                     commands=[f"{quote(snap.context.get('python') or 'python')} -m pip "
                               f"install torch --index-url "
                               f"https://download.pytorch.org/whl/cu{nv[0]}{nv[1]}"]))
    return Finding(
        id=ID, severity="warning", subject="torch-vs-nvcc-major",
        title=f"torch is built for CUDA {torch_cuda} but nvcc is CUDA {nv[0]}.{nv[1]}: modules "
        f"will link libcudart.so.{nv[0]} next to torch's CUDA {tv[0]} runtime",
        evidence=[f"torch/version.py: cuda = '{torch_cuda}'",
                  f"nvcc {tkd.get('version')} (from {tkd.get('version_source')}) at "
                  f"{tkd.get('path')}"],
        fixes=fixes,
        data={"kind": "major", "torch_cuda": torch_cuda, "nvcc_version": tkd.get("version"),
              "nvcc_version_source": tkd.get("version_source"),
              "toolkit_path": tkd.get("path")})
