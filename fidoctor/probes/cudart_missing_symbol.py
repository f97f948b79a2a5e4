"""cudart-missing-symbol: a cached module needs a CUDA runtime symbol the loaded libcudart lacks.

What: a ``cached_ops/<module>/<module>.so`` leaves a ``cuda*`` symbol undefined
(e.g. ``cudaGetDriverEntryPointByVersion@libcudart.so.12``) that no libcudart
in the target's lookup scope exports. The scope is what the target loads:
torch's copy found through ``libtorch_cuda.so``'s RPATH, LD_PRELOAD, and
FlashInfer's ``$CUDA_LIB_PATH`` preload — or, with ``--pid``, what
``/proc/PID/maps`` shows is mapped.
Why: the module was compiled by a newer nvcc (12.5+) than the pip runtime
torch pins (12.4.127); its ``NEEDED libcudart.so.12`` binds by SONAME to the
copy torch already loaded, so ``torch.ops.load_library`` fails with
``undefined symbol: …, version libcudart.so.12`` (SGL#5695) or the server hangs.
Fix, safest first: preload a runtime that has the symbol for this process
only (``preload-cudart``); rebuild the module after changing toolkits
(``quarantine-module``); upgrade pip's runtime (``upgrade-pip-cudart``,
conflicts with torch's pin); point CUDA_HOME at a toolkit no newer than the
runtime; replace pip's libcudart with the toolkit's (``replace-pip-cudart``,
risky: a pip reinstall silently reverts it).

``data`` keys: module, module_dir, so_path, missing ([[name, version, file]]),
symbols, runtime_path (the libcudart chosen), runtime_version,
runtime_version_source, runtime_via, runtime_soname, provider_path (a
libcudart here that exports every missing symbol; null if none),
provider_version, cuda_lib_path (dir of provider_path when that is named
libcudart.so.12, the name FlashInfer's preload opens; else null), pip_cudart_path,
pip_package, pip_version, toolkit_path, toolkit_version, python, upgrade_spec,
loaded_source (prediction / /proc/PID/maps / --deep).
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterable, List, Optional

from fidoctor.flashinfer import cudart as rules
from fidoctor.model import Finding, Fix
from fidoctor.paths import quarantine_dir
from fidoctor.probes._facts import quote
from fidoctor.snapshot import Snapshot

ID = "cudart-missing-symbol"
REQUIRES = ("elf", "cudart")


def lib_label(lib: Dict[str, Any]) -> str:
    v = lib.get("version") or "version unknown"
    return f"{lib.get('path')} ({v}, version from {lib.get('version_source', '?')})"


def pip_copy(cud: Dict[str, Any], soname: Optional[str]) -> Optional[Dict[str, Any]]:
    """pip's libcudart with this SONAME (the one torch pins), if the target has one."""
    for lib in cud.get("libraries", {}).values():
        if lib.get("package") and (soname is None or lib.get("soname") == soname):
            return lib
    return None


def toolkit_copy(cud: Dict[str, Any], tk: Dict[str, Any], soname: Optional[str]
                 ) -> Optional[Dict[str, Any]]:
    home = (tk.get("toolkit") or {}).get("path")
    for lib in cud.get("libraries", {}).values():
        if soname and lib.get("soname") != soname:
            continue
        if home and any(f"({home})" in w for w in lib.get("where", [])):
            return lib
    return None


def soname_path(lib: Optional[Dict[str, Any]]) -> Optional[str]:
    """The path a user would type for ``lib``: its SONAME link if we saw one, else the file.

    ``$CUDA_LIB_PATH/libcudart.so.12`` is what FlashInfer opens, so a dir is only
    a valid CUDA_LIB_PATH when that link (or file) is in it.
    """
    if not lib:
        return None
    for p in lib.get("seen_as") or []:
        if os.path.basename(p) == lib.get("soname"):
            return p
    return lib.get("path")


def runtime_data(snap: Snapshot, runtime: Dict[str, Any], provider: Optional[Dict[str, Any]]
                 ) -> Dict[str, Any]:
    """The machine-readable facts the fix layer needs, shared with cuda-version-skew."""
    cud, tk = snap.data("cudart"), snap.data("toolkit")
    soname = runtime.get("soname")
    pip = pip_copy(cud, soname)
    tkd = tk.get("toolkit") or {}
    want = rules.major_minor((provider or {}).get("version")) or rules.major_minor(
        tkd.get("version"))
    pkg = (pip or {}).get("package") or "nvidia-cuda-runtime-cu12"
    return {
        "runtime_path": runtime.get("path"), "runtime_version": runtime.get("version"),
        "runtime_version_source": runtime.get("version_source"),
        "runtime_soname": soname, "runtime_via": runtime.get("via"),
        "provider_path": soname_path(provider),
        "provider_version": (provider or {}).get("version"),
        "cuda_lib_path": _lib_dir(provider),
        "pip_cudart_path": (pip or {}).get("path"), "pip_package": pkg if pip else None,
        "pip_version": (pip or {}).get("version"),
        "toolkit_path": tkd.get("path"), "toolkit_version": tkd.get("version"),
        "python": snap.context.get("python"),
        "upgrade_spec": f"{pkg}=={want[0]}.{want[1]}.*" if want else None,
        "loaded_source": cud.get("loaded_source"),
    }


def _lib_dir(lib: Optional[Dict[str, Any]]) -> Optional[str]:
    p = soname_path(lib)
    return os.path.dirname(p) if p and os.path.basename(p) == "libcudart.so.12" else None


def runtime_fixes(snap: Snapshot, data: Dict[str, Any], probe_id: str) -> List[Fix]:
    """Fixes for "the loaded runtime is older than what the code needs", safest first."""
    fixes: List[Fix] = []
    prov = data.get("provider_path")
    torch_cuda = (snap.data("target").get("torch") or {}).get("cuda")
    if prov:
        cmds = [f"export LD_PRELOAD={quote(prov)}${{LD_PRELOAD:+:$LD_PRELOAD}}"]
        if data.get("cuda_lib_path"):
            cmds.append(f"export CUDA_LIB_PATH={quote(data['cuda_lib_path'])}")
        cmds.append(f"fidoctor fix --only {probe_id}  # writes these into an env file")
        fixes.append(Fix(
            id="preload-cudart", safety="safe",
            description=f"Load {prov} ({data.get('provider_version') or '?'}) first in the "
            "server process only (set these in the server's environment; nothing on disk "
            "changes). Needs a driver new enough for that runtime.",
            commands=cmds))
    pip = data.get("pip_cudart_path")
    if pip and data.get("upgrade_spec"):
        pin = (f" torch's CUDA {torch_cuda} wheels pin {data.get('pip_package')} (installed: "
               f"{data.get('pip_version')})" if torch_cuda else "")
        fixes.append(Fix(
            id="upgrade-pip-cudart", safety="caution",
            description=f"Upgrade pip's CUDA runtime to the toolkit's minor.{pin}: pip will "
            "report the conflict, and reinstalling torch reverts it.",
            commands=[f"{quote(data.get('python') or 'python')} -m pip install "
                      f"{quote(data['upgrade_spec'])}"]))
    older = _older_toolkit(snap, data.get("runtime_version"))
    if older:
        fixes.append(Fix(
            safety="caution",
            description=f"Build with a toolkit no newer than the runtime ({older['version']}); "
            "modules already built by the newer nvcc must then be rebuilt.",
            commands=[f"export CUDA_HOME={quote(older['path'])}"]))
    else:
        mm = rules.major_minor(data.get("runtime_version"))
        if mm:
            fixes.append(Fix(
                safety="caution",
                description=f"Install a CUDA {mm[0]}.{mm[1]} toolkit and build with it "
                "(none no newer than the runtime is installed here); then rebuild modules.",
                commands=[f"apt-get install cuda-toolkit-{mm[0]}-{mm[1]}",
                          f"export CUDA_HOME=/usr/local/cuda-{mm[0]}.{mm[1]}"]))
    if pip and prov:
        fixes.append(Fix(
            id="replace-pip-cudart", safety="risky",
            description="Replace pip's libcudart with the toolkit's (the seed users' fix): "
            "keeps a backup, but breaks pip's RECORD hash and any pip reinstall silently "
            "reverts it.",
            commands=[f"cp -a {quote(pip)} {quote(pip + '.fidoctor-bak')}",
                      f"cp {quote(prov)} {quote(pip)}"]))
    return fixes


def _older_toolkit(snap: Snapshot, runtime_version: Optional[str]) -> Optional[Dict[str, Any]]:
    rv = rules.major_minor(runtime_version)
    if not rv:
        return None
    for t in snap.data("toolkit").get("installed") or []:
        tv = rules.major_minor(t.get("version"))
        if tv and tv[0] == rv[0] and tv <= rv and t.get("has_nvcc") and t.get("has_libcudart"):
            return t
    return None


def check(snap: Snapshot) -> Iterable[Finding]:
    cud, elf = snap.data("cudart"), snap.data("elf")
    libs = cud.get("libraries") or {}
    loaded = cud.get("loaded") or []
    via = {lib["path"]: lib.get("via", "") for lib in loaded}
    for so_path, mod in sorted((elf.get("modules") or {}).items()):
        if mod.get("error"):
            continue
        r = rules.missing_symbols(mod, loaded, cud.get("own") or {}, libs)
        if not r["missing"] or r["unknown"]:
            continue
        yield _finding(snap, so_path, mod, r, libs, via)


def _finding(snap: Snapshot, so_path: str, mod: Dict[str, Any], r: Dict[str, Any],
             libs: Dict[str, Dict[str, Any]], via: Dict[str, str]) -> Finding:
    cud = snap.data("cudart")
    missing = r["missing"]
    soname = next(iter(r["bound"]), None)
    bound_path = r["bound"].get(soname) if soname else None
    runtime = dict(libs.get(bound_path or "", {}), via=via.get(bound_path or "",
                   "the module's own library search (nothing loaded it before)"))
    syms = [f"{n}@{v}" if v else n for n, v, _ in missing]
    evidence = [f"{so_path} needs {', '.join(syms)} (undefined dynamic symbol"
                f"{'s' if len(syms) > 1 else ''}, version requirement from .gnu.version_r)"]
    evidence.append(f"the target binds {soname} to {lib_label(runtime)}")
    evidence.append(f"chosen by: {runtime['via']}")
    steps = (cud.get("torch") or {}).get("steps") or []
    if len(steps) > 1 and bound_path and any(bound_path == lib.get("path") for lib in
                                    cud.get("loaded") or []):
        evidence.append("search: " + " → ".join(steps))
    evidence.append(f"{bound_path} exports no {', '.join(syms)}")
    have = set.intersection(*[set(rules.libraries_exporting(n, v, libs)) for n, v, _ in missing])
    provider = None
    if have:
        tk = toolkit_copy(cud, snap.data("toolkit"), soname)
        pick = tk["path"] if tk and tk["path"] in have else sorted(have)[0]
        provider = libs[pick]
        evidence.append(f"{soname_path(provider)} → {lib_label(provider)} on this machine exports "
                        f"{'them' if len(syms) > 1 else 'it'}")
    else:
        evidence.append(f"no libcudart found on this machine exports {', '.join(syms)}")
    data = runtime_data(snap, runtime, provider)
    data.update(module=mod.get("module"), module_dir=mod.get("module_dir"), so_path=so_path,
                missing=missing, symbols=syms)
    fixes = runtime_fixes(snap, data, ID)
    if mod.get("module_dir"):
        q = quarantine_dir(mod["module_dir"], "<timestamp>")
        fixes.insert(1 if fixes and fixes[0].id == "preload-cudart" else 0, Fix(
            id="quarantine-module", safety="safe",
            description="After changing the toolkit or runtime, move this module aside so it "
            "is rebuilt against it (fidoctor undo brings it back)",
            commands=[f"fidoctor fix --only {ID}",
                      f"# by hand: mkdir -p {quote(q)} && mv {quote(mod['module_dir'])} "
                      f"{quote(q)}/"]))
    return Finding(
        id=ID, severity="error", subject=so_path, evidence=evidence, fixes=fixes, data=data,
        title=f"module {mod.get('module')} needs {syms[0]}"
        f"{f' (+{len(syms) - 1} more)' if len(syms) > 1 else ''}, which the libcudart the "
        f"target loads ({runtime.get('version') or '?'}) does not export; loading it fails",
    )
