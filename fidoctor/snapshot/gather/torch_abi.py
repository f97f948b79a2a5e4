"""libtorch/c10 C++ symbols that compiled modules need, and whether the target's torch has them.

Which modules: cached modules whose NEEDED names libtorch*/libc10* (from the
``elf`` section), or that sit in a workspace of FlashInfer < 0.4 (which linked
its JIT modules against torch; a linker with ``--as-needed`` drops libtorch
from NEEDED when no symbol of it resolved; 0.4+ modules use tvm-ffi), and the prebuilt ``.so`` files of the
target's ``flashinfer`` (0.2.x AOT kernels, ``flashinfer_kernels.abi3.so``)
and ``flashinfer_jit_cache`` packages. For each, the undefined dynamic
symbols in torch's namespaces (``_ZN5torch``, ``_ZN3c10``, ``_ZN2at``,
vtables and typeinfo) come from fidoctor's ELF fact cache, and every one is
looked up in the target's ``torch/lib/*.so`` through ``.gnu.hash``
(fidoctor/elfsyms.py: a few preads per name, even in a 400 MB libtorch_cpu).
For a missing name that differs only in ``std::string``'s ABI (``Ss`` vs
``NSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEE``), whether torch
defines the other spelling is recorded too: that is a C++ ABI mismatch.

Data contract (``data["torch_abi"]``): torch_lib (dir or null), torch_libs
(paths), modules {so path: {module, module_dir, kind (cached|prebuilt),
needs (count), missing [names, ≤ 20], missing_count, abi_twins {missing:
twin torch defines}, error}}, scanned (prebuilt files looked at), truncated.
Typed as :class:`fidoctor.snapshot.types.TorchAbiFacts` (and in snapshot.schema.json).
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from fidoctor.elf import ElfError, FactCache
from fidoctor.elfsyms import defined

NAME = "torch_abi"
BUDGET_S = 15.0
ORDER = 9
REQUIRES = ("elf", "target", "cache")
TORCH_PREFIXES = (b"_ZN5torch", b"_ZNK5torch", b"_ZN3c10", b"_ZNK3c10", b"_ZN2at", b"_ZNK2at",
                  b"_ZTVN5torch", b"_ZTIN5torch", b"_ZTVN3c10", b"_ZTIN3c10", b"_ZTVN2at",
                  b"_ZTIN2at", b"_ZN6caffe2", b"_ZNK6caffe2")
TORCH_NEEDED = ("libtorch", "libc10")
CXX11_STRING = "NSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEE"
MAX_PREBUILT = 3000
MAX_DEPTH = 6


def abi_twin(name: str) -> Optional[str]:
    """The same symbol with the other ``std::string`` ABI, or None when it mentions none."""
    if CXX11_STRING in name:
        return name.replace(CXX11_STRING, "Ss")
    if "Ss" in name:
        return name.replace("Ss", CXX11_STRING)
    return None


def _prebuilt(dirs: List[str]) -> List[str]:
    out: List[str] = []
    for top in dirs:
        base = top.rstrip("/").count("/")
        for root, subdirs, files in os.walk(top):
            if root.count("/") - base >= MAX_DEPTH:
                subdirs[:] = []
            subdirs[:] = [d for d in subdirs if d not in ("__pycache__", "include", "csrc")]
            for f in files:
                if f.endswith(".so") or ".so." in f:
                    out.append(os.path.join(root, f))
                    if len(out) >= MAX_PREBUILT:
                        return out
    return out


def _before_tvm_ffi(version: Optional[str]) -> bool:
    """Workspaces of FlashInfer < 0.4 (unversioned layout included) held torch-linked modules;
    ``--as-needed`` can drop libtorch from NEEDED when none of its symbols resolved."""
    if not version:
        return True
    try:
        major, minor = (int(x) for x in version.split(".")[:2])
    except ValueError:
        return True
    return (major, minor) < (0, 4)


def _torch_lib(target: Dict[str, Any]) -> Optional[str]:
    d = ((target.get("modules") or {}).get("torch") or {}).get("dir")
    if d and os.path.isdir(os.path.join(d, "lib")):
        return os.path.join(d, "lib")
    return None


def gather(ctx, done) -> Dict[str, Any]:
    def data(name: str) -> Dict[str, Any]:
        s = done.get(name)
        return s.data if s is not None and s.ok else {}

    elf, target, cache = data("elf"), data("target"), data("cache")
    torch_era = {os.path.normpath(m["path"]) for ws in cache.get("workspaces", [])
                 if _before_tvm_ffi(ws.get("version")) for m in ws.get("modules", [])}
    out: Dict[str, Any] = {"torch_lib": _torch_lib(target), "torch_libs": [], "modules": {},
                           "scanned": 0, "truncated": False}
    cands: Dict[str, Dict[str, Any]] = {}
    for path, m in (elf.get("modules") or {}).items():
        if any(n.startswith(TORCH_NEEDED) for n in m.get("needed") or []) or \
                os.path.normpath(m.get("module_dir") or "") in torch_era:
            cands[path] = {"module": m.get("module"), "module_dir": m.get("module_dir"),
                           "kind": "cached"}
    pkg_dirs = [((target.get("modules") or {}).get(p) or {}).get("dir")
                for p in ("flashinfer", "flashinfer_jit_cache")]
    pre = _prebuilt([d for d in pkg_dirs if d and os.path.isdir(d)])
    out["scanned"], out["truncated"] = len(pre), len(pre) >= MAX_PREBUILT
    if not cands and not pre:
        return out  # 0.4+ caches and no prebuilt kernels: nothing needs torch's symbols
    facts = FactCache(name="torch")
    needs: Dict[str, List[str]] = {}
    for path in pre:
        f = facts.facts(path, TORCH_PREFIXES)
        if "error" not in f and any(n.startswith(TORCH_NEEDED) for n in f.get("needed") or []):
            cands[os.path.normpath(path)] = {"module": os.path.basename(path), "module_dir": None,
                                             "kind": "prebuilt"}
    for path, c in cands.items():
        f = facts.facts(path, TORCH_PREFIXES)
        if "error" in f:
            out["modules"][path] = dict(c, error=f["error"])
            continue
        needs[path] = sorted({u[0] for u in f.get("undefined") or []})
    facts.save()
    if not out["torch_lib"]:
        for path, c in cands.items():
            out["modules"].setdefault(path, dict(c, needs=len(needs.get(path, [])),
                                                 missing=None))
        return out
    libs = sorted(os.path.join(out["torch_lib"], n) for n in os.listdir(out["torch_lib"])
                  if n.startswith(("libtorch", "libc10")) and ".so" in n)
    out["torch_libs"] = libs
    wanted = sorted({n for ns in needs.values() for n in ns})
    twins = {n: t for n in wanted for t in [abi_twin(n)] if t}
    ask = sorted(set(wanted) | set(twins.values()))
    have: Dict[str, bool] = {n: False for n in ask}
    for lib in libs:
        left = [n for n in ask if not have[n]]
        if not left:
            break
        try:
            for n, ok in defined(lib, left).items():
                have[n] = have[n] or ok
        except ElfError:
            continue
    for path, ns in needs.items():
        missing = [n for n in ns if not have.get(n)]
        out["modules"][path] = dict(cands[path], needs=len(ns), missing=missing[:20],
                                    missing_count=len(missing),
                                    abi_twins={n: twins[n] for n in missing[:20]
                                               if n in twins and have.get(twins[n])})
    return out
