"""The libcudart the target process loads (or would load), and every other copy around.

Prediction, in load order (fidoctor/flashinfer/cudart.py has the rules):
1. ``LD_PRELOAD`` entries that are a libcudart (global, first);
2. torch: ``torch/lib/libtorch_cuda.so``'s NEEDED libcudart, searched through
   its RPATH/RUNPATH, LD_LIBRARY_PATH, /etc/ld.so.cache (``ldconfig -p``) and
   the default dirs — the evidence chain is kept as text;
3. FlashInfer ≥0.2.3: ``$CUDA_LIB_PATH/libcudart.so.12`` when it exists.
With ``--pid``, ``/proc/PID/maps`` says what is *actually* mapped and wins;
with ``--deep``, torch is imported in the target interpreter (guarded
subprocess, timeout) and its own maps are read.

For each copy (keyed by realpath): SONAME, exported ``cuda*`` symbols with
versions, the real version and how it was learned (package metadata, file
name with a full version, the toolkit's version.json/dist-info, the library's own
``cudaRuntimeGetVersion()``, or only the SONAME major — never a SONAME such as
``libcudart.so.11.0`` read as a version).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, List, Optional, Tuple

from fidoctor import proc
from fidoctor.elf import ElfError, FactCache, read_facts
from fidoctor.flashinfer import cudart as rules
from fidoctor.snapshot.gather._ld import ldcache, search

NAME = "cudart"
BUDGET_S = 30.0
ORDER = 7
REQUIRES = ("target", "toolkit")
DEEP_TIMEOUT_S = 20.0
SONAMES = ("libcudart.so.12", "libcudart.so.13", "libcudart.so.11.0")
PIP_DIRS = {"nvidia-cuda-runtime-cu11": "nvidia/cuda_runtime/lib",
            "nvidia-cuda-runtime-cu12": "nvidia/cuda_runtime/lib",
            "nvidia-cuda-runtime-cu13": "nvidia/cu13/lib",
            "nvidia-cuda-runtime": "nvidia/cu13/lib"}
DEEP_SCRIPT = r'''
import json, sys
out = {}
try:
    import torch
    out["torch"] = getattr(torch, "__version__", "?")
except BaseException as e:
    out["import_error"] = "%s: %s" % (type(e).__name__, e)
seen = []
with open("/proc/self/maps") as f:
    for line in f:
        p = line.split(None, 5)
        if len(p) == 6 and "libcudart" in p[5].rsplit("/", 1)[-1]:
            path = p[5].strip()
            if path not in seen:
                seen.append(path)
out["mapped"] = seen
print(json.dumps(out))
'''


ASK_SCRIPT = r'''
import ctypes, sys
try:
    v = ctypes.c_int(0)
    rc = ctypes.CDLL(sys.argv[1]).cudaRuntimeGetVersion(ctypes.byref(v))
    print("ok %d %d" % (rc, v.value))
except BaseException as e:
    print("error %s: %s" % (type(e).__name__, e))
'''
ASK_TIMEOUT_S = 5.0


def ask_runtime(path: str) -> Tuple[Optional[str], str]:
    """The runtime's own answer: ``cudaRuntimeGetVersion()`` in a child with a deadline
    (it needs no driver). (version "11.8" or None, how it went)."""
    r = proc.run([sys.executable, "-c", ASK_SCRIPT, path], timeout=ASK_TIMEOUT_S,
                 env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"})
    if not r.ok:
        return None, r.describe()
    parts = (r.stdout.strip().splitlines() or [""])[-1].split()
    if len(parts) == 3 and parts[:2] == ["ok", "0"] and parts[2].isdigit() and int(parts[2]):
        return rules.runtime_version_string(int(parts[2])), \
            f"cudaRuntimeGetVersion() = {parts[2]}"
    if len(parts) == 3 and parts[0] == "ok":  # 11.x answers 35 (insufficient driver) with none
        return None, f"error {parts[1]}"
    return None, " ".join(parts)[:200] or "no answer"


def _real(path: str) -> Tuple[str, str]:
    """(realpath, error) — a symlink loop or dangling link is an error, not an exception."""
    try:
        os.stat(path)
    except OSError as e:
        return os.path.abspath(path), ("symlink loop" if e.errno == 40 else
                                       (e.strerror or str(e)))
    return os.path.realpath(path), ""


class _Libs:
    """Every libcudart seen, keyed by realpath, described once."""

    def __init__(self, target: Dict[str, Any], cache: FactCache) -> None:
        self.libs: Dict[str, Dict[str, Any]] = {}
        self.target = target
        self.cache = cache

    def add(self, path: str, where: str) -> str:
        real, err = _real(path)
        lib = self.libs.get(real)
        if lib is None:
            lib = self.libs[real] = {"path": real, "seen_as": [], "where": []}
            if err:
                lib["error"] = err
            else:
                f = self.cache.facts(real)
                if "error" in f:
                    lib["error"] = f["error"]
                else:
                    lib["soname"] = f["soname"]
                    lib["exports"] = f["exports"]
                    try:
                        lib["size"] = os.stat(real).st_size
                    except OSError:
                        lib["size"] = None
            lib["version"], lib["version_source"], lib["package"] = self._version(real, lib)
        if path not in lib["seen_as"]:
            lib["seen_as"].append(path)
        if where not in lib["where"]:
            lib["where"].append(where)
        return real

    def _version(self, real: str, lib: Dict[str, Any]) -> Tuple[Optional[str], str, Optional[str]]:
        pkgs = self.target.get("packages") or {}
        for name, sub in PIP_DIRS.items():
            info = pkgs.get(name) or {}
            loc = info.get("location")
            if loc and real.startswith(os.path.join(os.path.realpath(loc), sub) + "/"):
                return info.get("version"), f"package metadata ({name})", name
        v = rules.version_from_filename(real)
        if v:
            return v, "file name", None
        d = os.path.dirname(real)
        for _ in range(4):
            d = os.path.dirname(d)
            vj = os.path.join(d, "version.json")
            if os.path.isfile(vj):
                try:
                    with open(vj, encoding="utf-8") as f:
                        raw = json.load(f)
                    v = (raw.get("cuda_cudart") or {}).get("version")
                    if v:
                        return v, f"toolkit version.json ({vj})", None
                except (OSError, ValueError, AttributeError):
                    pass
            try:
                for n in os.listdir(os.path.join(d, "dist-info")):
                    if n.startswith("nvidia_cuda_runtime-") and n.endswith(".dist-info"):
                        return n[len("nvidia_cuda_runtime-"):-len(".dist-info")], \
                            f"toolkit dist-info ({d}/dist-info/{n})", None
            except OSError:
                pass
        how = ""
        if not lib.get("error"):
            v, how = ask_runtime(real)
            if v:
                return v, f"file itself: {how}", None
        major = rules.soname_major(lib.get("soname"))
        asked = f"; the library's own cudaRuntimeGetVersion() gave {how}" if how else ""
        return (str(major) if major else None), f"SONAME only (major version){asked}", None


def _torch(target: Dict[str, Any], env: Dict[str, str], ld_entries: Dict[str, List[str]]
           ) -> Dict[str, Any]:
    tdir = ((target.get("modules") or {}).get("torch") or {}).get("dir")
    if not tdir:
        return {"present": False}
    out: Dict[str, Any] = {"present": True, "dir": tdir}
    for name in ("libtorch_cuda.so", "libc10_cuda.so", "libtorch_global_deps.so"):
        lib = os.path.join(tdir, "lib", name)
        if not os.path.exists(lib):
            continue
        try:
            f = read_facts(lib, prefixes=())
        except ElfError as e:
            out.setdefault("errors", []).append(f"{lib}: {e}")
            continue
        needed = [n for n in f["needed"] if n.startswith("libcudart")]
        if not needed:
            continue
        out.update(lib=lib, needed=needed[0], rpath=f["rpath"], runpath=f["runpath"])
        dirs = rules.search_dirs(f["rpath"], f["runpath"], os.path.dirname(lib),
                                 env.get("LD_LIBRARY_PATH"))
        out["resolved"], out["steps"] = search(needed[0], dirs, ld_entries)
        return out
    out["cpu_only"] = "no torch/lib library NEEDs libcudart (CPU-only torch?)"
    return out


def _mapped_from_pid(pid: int) -> Dict[str, Any]:
    try:
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as f:
            return {"pid": pid, "paths": rules.parse_maps(f.read())}
    except OSError as e:
        return {"pid": pid, "error": e.strerror or str(e), "paths": []}


def _deep(python: str, env: Dict[str, str]) -> Dict[str, Any]:
    r = proc.run([python, "-c", DEEP_SCRIPT], timeout=DEEP_TIMEOUT_S, env=env)
    if not r.ok:
        return {"ok": False, "error": r.describe(), "paths": []}
    try:
        raw = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"ok": False, "error": "no JSON from the target interpreter", "paths": []}
    return {"ok": "import_error" not in raw, "error": raw.get("import_error", ""),
            "torch": raw.get("torch"), "paths": raw.get("mapped") or []}


def gather(ctx, done) -> Dict[str, Any]:
    env = ctx.env
    target = done["target"].data if done.get("target") is not None and done["target"].ok else {}
    tk = done["toolkit"].data if done.get("toolkit") is not None and done["toolkit"].ok else {}
    cache = FactCache(name="libs")
    libs = _Libs(target, cache)
    ldc = ldcache(env, "libcudart")
    out: Dict[str, Any] = {"ldcache": ldc, "ld_library_path": env.get("LD_LIBRARY_PATH"),
                           "ld_preload": env.get("LD_PRELOAD")}
    loaded: List[Dict[str, Any]] = []
    for p in (env.get("LD_PRELOAD") or "").replace(" ", ":").split(":"):
        if p and "libcudart" in os.path.basename(p):
            real = libs.add(p, "LD_PRELOAD")
            loaded.append({"path": real, "soname": libs.libs[real].get("soname"), "global": True,
                           "via": f"LD_PRELOAD={p}"})
    torch = _torch(target, env, ldc["entries"])
    out["torch"] = torch
    if torch.get("needed"):
        first = next((lib for lib in loaded if lib["soname"] == torch["needed"]), None)
        if first is not None:
            torch["bound_to_preload"] = first["path"]
        elif torch.get("resolved"):
            real = libs.add(torch["resolved"], "torch")
            loaded.append({"path": real, "soname": libs.libs[real].get("soname"), "global": True,
                           "via": f"{torch['lib']} NEEDED {torch['needed']} → "
                                  + "; ".join(torch["steps"][-1:])})
    pkgs = target.get("packages") or {}
    fi = (pkgs.get("flashinfer-python") or pkgs.get("flashinfer") or {}).get("version")
    pre = {"flashinfer": fi, "applies": rules.fi_preloads(fi), "path": rules.fi_preload_path(env),
           "cuda_lib_path": env.get("CUDA_LIB_PATH")}
    pre["exists"] = os.path.exists(pre["path"])
    if pre["applies"] and pre["exists"]:
        real = libs.add(pre["path"], "FlashInfer CUDA_LIB_PATH preload")
        if not any(lib["path"] == real for lib in loaded):
            loaded.append({"path": real, "soname": libs.libs[real].get("soname"), "global": True,
                           "via": f"FlashInfer {fi} preloads {pre['path']} (RTLD_GLOBAL)"})
    out["flashinfer_preload"] = pre
    out["predicted"] = loaded
    own: Dict[str, Optional[str]] = {}
    for so in SONAMES:
        path, steps = search(so, rules.search_dirs(None, None, "/", env.get("LD_LIBRARY_PATH")),
                              ldc["entries"])
        own[so] = libs.add(path, f"default search for {so}") if path else None
    out["own"] = own
    observed = None
    if ctx.pid:
        observed = dict(_mapped_from_pid(ctx.pid), source=f"/proc/{ctx.pid}/maps")
    elif ctx.deep and ctx.python:
        observed = dict(_deep(ctx.python, env), source="--deep: import torch in the target")
    out["observed"] = observed
    if observed and observed.get("paths"):
        reals = [libs.add(p, observed["source"]) for p in observed["paths"]]
        order = [lib for lib in loaded if lib["path"] in reals]
        order += [{"path": r, "soname": libs.libs[r].get("soname"), "global": True,
                   "via": f"mapped ({observed['source']})"} for r in reals
                  if r not in {lib["path"] for lib in order}]
        for lib in order:
            lib["via"] += f"; confirmed by {observed['source']}"
        out["loaded"], out["loaded_source"] = order, observed["source"]
    else:
        out["loaded"], out["loaded_source"] = loaded, "prediction"
    _candidates(libs, target, tk)
    out["libraries"] = libs.libs
    cache.save()
    return out


def _candidates(libs: _Libs, target: Dict[str, Any], tk: Dict[str, Any]) -> None:
    """Other copies a fix could point to: pip's, the toolkit's, installed toolkits'."""
    pkgs = target.get("packages") or {}
    for name, sub in PIP_DIRS.items():
        loc = (pkgs.get(name) or {}).get("location")
        if loc:
            for so in SONAMES:
                p = os.path.join(loc, sub, so)
                if os.path.lexists(p):
                    libs.add(p, f"pip {name}")
    home = (tk.get("toolkit") or {}).get("path")
    dirs = [(home, "CUDA toolkit FlashInfer uses")] if home else []
    dirs += [(t["path"], "installed toolkit") for t in tk.get("installed") or []]
    for d, why in dirs:
        for sub in ("lib64", "targets/x86_64-linux/lib"):
            for so in ("libcudart.so",) + SONAMES:
                p = os.path.join(d, sub, so)
                if os.path.lexists(p):
                    libs.add(p, f"{why} ({d})")
