"""Which libcudart a FlashInfer module binds to, decided as glibc's loader decides.

Pure functions (no filesystem, no clock) shared by the cudart/toolkit gatherers
and the probes, so the rules can be read and tested in one place:

- Search order for a NEEDED name (ld.so(8)): with DT_RPATH and no DT_RUNPATH,
  the RPATH dirs come *before* LD_LIBRARY_PATH; with DT_RUNPATH they come
  after it; then /etc/ld.so.cache, then the default dirs. torch's wheels use
  RPATH ``$ORIGIN/../../nvidia/cuda_runtime/lib`` so pip's copy wins.
- A JIT module has no RPATH. Its ``NEEDED libcudart.so.12`` binds to an
  already loaded object with that SONAME (torch's copy) before any search.
- A symbol reference is looked up in the global scope (LD_PRELOAD, RTLD_GLOBAL
  loads, in load order), then in the module's own dependencies; a versioned
  reference ``sym@libcudart.so.12`` matches only that version name.
- FlashInfer 0.2.3+ preloads ``f"{CUDA_LIB_PATH}/libcudart.so.12"`` with
  RTLD_GLOBAL when that file exists (FI PR#928; x86_64 and .so.12 only).
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from fidoctor.procfs import mapped_files

DEFAULT_DIRS = ("/lib64", "/usr/lib64", "/lib", "/usr/lib")
FI_PRELOAD_SINCE = "0.2.3"
FI_DEFAULT_CUDA_LIB_PATH = "/usr/local/cuda/targets/x86_64-linux/lib/"
BYVERSION = "cudaGetDriverEntryPointByVersion"
BYVERSION_SINCE = (12, 5)  # first CUDA runtime exporting BYVERSION (nm -D of the wheels)
_NVCC_RELEASE = re.compile(r"release (\d+)\.(\d+),\s*V(\d+(?:\.\d+)*)")
_LIB_VERSION = re.compile(r"libcudart\.so\.(\d+\.\d+(?:\.\d+)?)$")


def version_tuple(v: Optional[str]) -> Optional[Tuple[int, ...]]:
    """``"12.4.127"`` → (12, 4, 127); None for anything unparsable."""
    if not v:
        return None
    m = re.match(r"^\s*(\d+(?:\.\d+)*)", str(v))
    return tuple(int(x) for x in m.group(1).split(".")) if m else None


def major_minor(v: Optional[str]) -> Optional[Tuple[int, int]]:
    t = version_tuple(v)
    if not t:
        return None
    return (t[0], t[1] if len(t) > 1 else 0)


def parse_nvcc_version(text: str) -> Optional[Dict[str, str]]:
    """``Cuda compilation tools, release 12.9, V12.9.86`` → release and build."""
    m = _NVCC_RELEASE.search(text or "")
    if not m:
        return None
    return {"release": f"{m.group(1)}.{m.group(2)}", "version": m.group(3)}


def soname_major(soname: Optional[str]) -> Optional[int]:
    m = re.match(r"^libcudart\.so\.(\d+)", soname or "")
    return int(m.group(1)) if m else None


def version_from_filename(path: str) -> Optional[str]:
    """``libcudart.so.12.4.127`` → ``12.4.127`` (the toolkit's real file names).

    Only a full major.minor.patch counts: ``libcudart.so.11.0`` is the SONAME of
    *every* 11.x runtime (pip's 11.8.89 ships under that name), not version 11.0.
    """
    m = _LIB_VERSION.search(os.path.basename(path))
    if m and m.group(1).count(".") >= 2:
        return m.group(1)
    return None


def runtime_version_string(n: int) -> str:
    """``cudaRuntimeGetVersion``'s 11080 → "11.8", 12040 → "12.4"."""
    return f"{n // 1000}.{(n % 1000) // 10}"


def expand_dirs(value: Optional[str], origin: str, lib: str = "lib64",
                platform: str = "x86_64") -> List[str]:
    """RPATH/RUNPATH/LD_LIBRARY_PATH text → dirs, with $ORIGIN/$LIB/$PLATFORM expanded.

    Empty entries are skipped (glibc treats them as the cwd, which no server
    relies on knowingly; a probe may mention them separately).
    """
    out: List[str] = []
    for part in (value or "").replace(";", ":").split(":"):
        if not part:
            continue
        for token, repl in (("$ORIGIN", origin), ("${ORIGIN}", origin), ("$LIB", lib),
                            ("${LIB}", lib), ("$PLATFORM", platform), ("${PLATFORM}", platform)):
            part = part.replace(token, repl)
        out.append(os.path.normpath(part))
    return out


def search_dirs(rpath: Optional[str], runpath: Optional[str], origin: str,
                ld_library_path: Optional[str]) -> List[Tuple[str, str]]:
    """(dir, why) in the order ld.so tries them for one object's NEEDED entries."""
    rp = [(d, f"RPATH {rpath}") for d in expand_dirs(rpath, origin)] if not runpath else []
    llp = [(d, "LD_LIBRARY_PATH") for d in expand_dirs(ld_library_path, origin)]
    run = [(d, f"RUNPATH {runpath}") for d in expand_dirs(runpath, origin)]
    return rp + llp + run


def parse_ldconfig(text: str, machine: str = "x86-64") -> Dict[str, List[str]]:
    """``ldconfig -p`` output → {soname: [paths]} for this machine's ABI."""
    out: Dict[str, List[str]] = {}
    for line in (text or "").splitlines():
        m = re.match(r"^\s+(\S+)\s+\(([^)]*)\)\s+=>\s+(\S+)", line)
        if not m:
            continue
        name, flags, path = m.groups()
        if machine and machine not in flags:
            continue  # a 32-bit ("libc6" alone) or foreign-ABI entry
        out.setdefault(name, []).append(path)
    return out


def parse_maps(text: str, pattern: str = "libcudart") -> List[str]:
    """Distinct file paths in /proc/PID/maps whose name contains ``pattern``, by address."""
    return [p for p in mapped_files(text or "") if pattern in os.path.basename(p)]


def fi_preloads(fi_version: Optional[str]) -> Optional[bool]:
    """Whether this FlashInfer version preloads $CUDA_LIB_PATH/libcudart.so.12 (None: unknown)."""
    t, since = version_tuple(fi_version), version_tuple(FI_PRELOAD_SINCE)
    if t is None or since is None:
        return None
    return t[:3] >= since


def fi_preload_path(env: Dict[str, str]) -> str:
    """The file FlashInfer's ``ctypes.CDLL(f"{CUDA_LIB_PATH}/libcudart.so.12")`` opens."""
    return os.path.normpath(f"{env.get('CUDA_LIB_PATH', FI_DEFAULT_CUDA_LIB_PATH)}/libcudart.so.12")


def exports_symbol(exports: Dict[str, Optional[str]], name: str, version: Optional[str]) -> bool:
    """Does a library with ``exports`` satisfy a reference to ``name`` [@ ``version``]?"""
    if name not in exports:
        return False
    tag = exports[name]
    if version is None or tag is None:
        return True  # unversioned on either side binds to the default definition
    return tag.lstrip("@") == version


def bind_module(needed: Sequence[str], loaded: List[Dict[str, Any]],
                own: Dict[str, Optional[str]]) -> Dict[str, Optional[str]]:
    """For each libcudart NEEDED entry: the path it binds to.

    An object already loaded with that SONAME wins (glibc matches SONAMEs of
    loaded objects before searching); otherwise ``own[soname]`` (the module's
    own search result, no RPATH) or None when nothing would be found.
    """
    out: Dict[str, Optional[str]] = {}
    for n in needed:
        if not n.startswith("libcudart"):
            continue
        hit = next((lib["path"] for lib in loaded if lib.get("soname") == n), None)
        out[n] = hit if hit is not None else own.get(n)
    return out


def provider(name: str, version: Optional[str], scope: Iterable[str],
             libraries: Dict[str, Dict[str, Any]]) -> Optional[str]:
    """First library in ``scope`` (paths, lookup order) that exports the symbol."""
    for path in scope:
        lib = libraries.get(path) or {}
        if exports_symbol(lib.get("exports") or {}, name, version):
            return path
    return None


def lookup_scope(bound: Dict[str, Optional[str]], loaded: List[Dict[str, Any]]) -> List[str]:
    """Global scope (preloads and RTLD_GLOBAL loads, in order), then the module's deps."""
    scope = [lib["path"] for lib in loaded if lib.get("global")]
    for p in bound.values():
        if p and p not in scope:
            scope.append(p)
    return scope


def missing_symbols(module: Dict[str, Any], loaded: List[Dict[str, Any]],
                    own: Dict[str, Optional[str]],
                    libraries: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """Which CUDA-runtime references of ``module`` (ELF facts) would fail to bind.

    Returns ``{"bound": {soname: path}, "scope": [...], "missing": [[name, ver, file]],
    "unknown": reason or ""}``; ``unknown`` is set when a bound library's
    exports are not known (so absence would be a guess).
    """
    bound = bind_module(module.get("needed") or [], loaded, own)
    scope = lookup_scope(bound, loaded)
    unknown = ""
    for p in scope:
        if "exports" not in (libraries.get(p) or {}):
            unknown = f"exports of {p} unknown: {(libraries.get(p) or {}).get('error', 'not read')}"
    missing = []
    for name, ver, vfile in module.get("undefined") or []:
        if vfile is not None and not str(vfile).startswith("libcudart"):
            continue
        if vfile is None and not any(bound.values()):
            continue  # not a cudart reference at all
        if provider(name, ver, scope, libraries) is None:
            missing.append([name, ver, vfile])
    if not any(bound.values()) and any(n.startswith("libcudart") for n in module.get("needed") or []):
        unknown = unknown or "no libcudart would be found for this module at all"
    return {"bound": bound, "scope": scope, "missing": missing, "unknown": unknown}


def modules_missing(modules: Dict[str, Dict[str, Any]], loaded: List[Dict[str, Any]],
                    own: Dict[str, Optional[str]], libraries: Dict[str, Dict[str, Any]]
                    ) -> List[Tuple[str, Dict[str, Any], Dict[str, Any]]]:
    """(so path, ELF facts, ``missing_symbols``) of each module (the elf section's
    ``modules``) that certainly misses a CUDA-runtime symbol, by path.

    Computed once per distinct pair of NEEDED and undefined lists: the modules of one
    build share a handful (10,000 modules: a few computations, not 10,000). A live
    snapshot keeps a shared record as one object (fidoctor.elf's fact table), so most
    modules are matched by identity before their lists are compared.
    """
    by_id: Dict[Tuple[int, int], Dict[str, Any]] = {}
    by_value: Dict[Any, Dict[str, Any]] = {}
    hits = []
    for so_path, mod in modules.items():
        if mod.get("error"):
            continue
        needed, undefined = mod.get("needed"), mod.get("undefined")
        ident = (id(needed), id(undefined))  # the same objects: the same answer
        r = by_id.get(ident)
        if r is None:
            try:
                value: Any = (tuple(needed or ()), tuple(tuple(u) for u in undefined or ()))
                r = by_value.get(value)
            except TypeError:  # off-shape facts (a hand-edited snapshot): no memo
                value = None
            if r is None:
                r = missing_symbols(mod, loaded, own, libraries)
                if value is not None:
                    by_value[value] = r
            by_id[ident] = r
        if r["missing"] and not r["unknown"]:
            hits.append((so_path, mod, r))
    return sorted(hits, key=lambda h: h[0])


def libraries_exporting(name: str, version: Optional[str],
                        libraries: Dict[str, Dict[str, Any]]) -> List[str]:
    return sorted(p for p, lib in libraries.items()
                  if exports_symbol(lib.get("exports") or {}, name, version))


def cuda_home_problems(value: str) -> List[str]:
    """What is wrong with a CUDA_HOME/CUDA_PATH *string* before looking at disk."""
    problems = []
    if value != value.strip():
        problems.append("has leading/trailing whitespace")
    if os.pathsep in value:
        problems.append(f"contains '{os.pathsep}' (a PATH-style list, used verbatim as one "
                        "directory: FlashInfer would run "
                        f"'{value.rstrip('/')}/bin/nvcc')")
    elif value and not os.path.isabs(value.strip()):
        problems.append("is a relative path (resolved against each process's cwd)")
    if len(value) > 1 and value.endswith("/"):
        problems.append("ends with '/' (build.ninja's cuda_home then differs textually from "
                        "other launchers' and forces rebuilds)")
    return problems
