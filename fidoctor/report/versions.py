"""The version table: every component that decides whether a JIT module builds and loads.

Read defensively from the snapshot: the toolkit, cudart, elf and GPU sections
are optional (older snapshots, other gatherers failing), so a missing fact is
a missing row, never a crash. Keys are looked up along a few known spellings.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from fidoctor import __version__
from fidoctor.snapshot import Snapshot

Row = Tuple[str, Optional[str], str]


def dig(d: Any, *paths: str) -> Any:
    """The first non-empty value along dotted ``paths`` (``"nvcc.version"``), else None."""
    for path in paths:
        cur = d
        for part in path.split("."):
            if isinstance(cur, dict):
                cur = cur.get(part)
            elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
                cur = cur[int(part)]
            else:
                cur = None
                break
        if cur not in (None, "", [], {}):
            return cur
    return None


def _pkg(pkgs: Dict[str, Any], *names: str) -> Tuple[Optional[str], str]:
    for n in names:
        if n in pkgs:
            return pkgs[n].get("version"), n
    return None, ""


def _s(v: Any) -> str:
    return "" if v is None else str(v)


def rows(snap: Snapshot) -> List[Row]:
    t = snap.data("target")
    pkgs = t.get("packages") or {}
    out: List[Row] = []
    fid = __version__
    if snap.fidoctor_version not in (__version__, "?"):
        fid = f"{__version__} (snapshot by {snap.fidoctor_version})"
    out.append(("fidoctor", fid, ""))
    if t:
        out.append(("Python", t.get("version"), _s(t.get("python") or snap.context.get("python"))))
    else:
        out.append(("Python", None, _s(snap.context.get("python")) + " (not gathered)"))
    torch_v, _ = _pkg(pkgs, "torch")
    torch_v = torch_v or dig(t, "torch.version")
    if torch_v or t.get("torch"):
        cuda = dig(t, "torch.cuda")
        out.append(("torch", torch_v, f"built for CUDA {cuda}" if cuda else ""))
    for names in (("flashinfer-python", "flashinfer"), ("flashinfer-jit-cache",),
                  ("flashinfer-cubin",)):
        v, n = _pkg(pkgs, *names)
        if v or names[0] == "flashinfer-python":
            out.append((n or names[0], v, "" if v else "not installed"))
    out += _toolkit_rows(snap)
    v, n = _pkg(pkgs, "nvidia-cuda-runtime-cu12", "nvidia-cuda-runtime-cu13", "nvidia-cuda-runtime-cu11",
                "nvidia-cuda-runtime")
    if v:
        out.append(("pip CUDA runtime", v, n))
    out += _cudart_rows(snap)
    out += _gpu_rows(snap)
    out += _compiler_rows(snap)
    for name in ("sglang", "vllm", "apache-tvm-ffi", "ninja", "triton"):
        v, _ = _pkg(pkgs, name)
        if v:
            out.append((name, v, ""))
    h = snap.data("host")
    if h:
        fs = h.get("cache_fs") or {}
        mem = h.get("mem_total")
        bits = [f"{h.get('cpu_count')} cores" if h.get("cpu_count") else "",
                f"{mem / 2**30:.0f} GiB RAM" if isinstance(mem, (int, float)) else "",
                f"cache on {fs.get('fstype')}" if fs.get("fstype") else ""]
        out.append(("host", f"Linux {h.get('kernel')} {h.get('machine')}",
                    ", ".join(b for b in bits if b)))
    return out


def _toolkit_rows(snap: Snapshot) -> List[Row]:
    tk = snap.data("toolkit")
    if not tk:
        return []
    ver = dig(tk, "toolkit.nvcc.version.version", "toolkit.version", "nvcc.version",
              "nvcc_version", "version")
    home = dig(tk, "toolkit.path", "resolution.path", "cuda_home", "path")
    how = dig(tk, "resolution.source", "source")
    if isinstance(ver, dict):
        ver = ver.get("version") or ver.get("release")
    detail = _s(home) + (f" (from {how})" if how else "")
    return [("nvcc (toolkit FlashInfer uses)", _s(ver) or None, detail or "not found")]


def _cudart_rows(snap: Snapshot) -> List[Row]:
    """The libcudart the target maps first (observed via --pid/--deep, else predicted)."""
    cr = snap.data("cudart")
    if not cr:
        return []
    libs = cr.get("libraries") or {}
    loaded = [x for x in cr.get("loaded") or [] if isinstance(x, dict)]
    source = _s(cr.get("loaded_source"))
    if not loaded:
        why = "none predicted: no torch in the target" if not dig(cr, "torch.present") \
            else "not resolved"
        return [("libcudart the target loads", None, why)]
    out: List[Row] = []
    for lib in loaded[:2]:
        path = _s(lib.get("path"))
        info = libs.get(path) or {}
        ver = info.get("version") or lib.get("version")
        out.append(("libcudart the target loads", _s(ver) or None,
                    path + (f" ({source})" if source else "")))
    return out


def _gpu_rows(snap: Snapshot) -> List[Row]:
    out: List[Row] = []
    for name in ("gpu", "driver", "nvidia"):
        g = snap.data(name)
        if not g:
            continue
        drv = dig(g, "driver_version", "driver.version", "driver")
        if drv and not isinstance(drv, (dict, list)):
            cuda = dig(g, "cuda_driver_version", "cuda")
            out.append(("NVIDIA driver", str(drv), f"supports CUDA {cuda}" if cuda else ""))
        elif name == "gpu" and g.get("present") is False:
            out.append(("NVIDIA driver", None, "none: " + "; ".join(g.get("absent_reasons") or [])))
        gpus = dig(g, "gpus", "devices")
        if isinstance(gpus, list) and gpus:
            names = sorted({_s(dig(x, "name")) for x in gpus if isinstance(x, dict)})
            caps = sorted({_s(dig(x, "compute_cap", "capability")) for x in gpus
                           if isinstance(x, dict)} - {""})
            out.append(("GPU", f"{len(gpus)} × {', '.join(names)}",
                        f"compute capability {', '.join(caps)}" if caps else ""))
        break
    return out


def _compiler_rows(snap: Snapshot) -> List[Row]:
    """nvcc's host compiler (-ccbin $CC, else gcc) and FlashInfer's C++ compiler."""
    hc = snap.data("host_compiler")
    out: List[Row] = []
    for role, label in (("nvcc_host", "host compiler (nvcc -ccbin)"), ("cxx", "C++ compiler")):
        c = hc.get(role)
        if not isinstance(c, dict):
            continue
        ver = f"{c.get('family')} {c.get('version')}" if c.get("version") else None
        how = {"CC": "from $CC", "CXX": "from $CXX"}.get(_s(c.get("source")), "default, on PATH")
        where = _s(c.get("path")) or f"{c.get('command')} not found"
        out.append((label, ver, f"{where} ({how})"))
    return out
