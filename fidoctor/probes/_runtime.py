"""Shared views for the CUDA runtime probes (cudart-missing-symbol, cuda-version-skew).

Which libcudart copies the target has (pip's, the toolkit's), the facts a
runtime fix needs, and those fixes, safest first. Pure functions of the
snapshot; probes import them from here, never from each other.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from fidoctor.flashinfer import cudart as rules
from fidoctor.model import Fix
from fidoctor.probes._facts import quote
from fidoctor.snapshot import Snapshot


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
