"""The CUDA toolkit FlashInfer would build with, resolved in FlashInfer's own order.

``CUDA_HOME``, else ``CUDA_PATH`` (an empty value counts as unset, a
malformed one is used verbatim, as FlashInfer does), else
``dirname(dirname(which nvcc))`` on the *target's* PATH (no realpath: a
wrapper at /usr/local/bin/nvcc gives cuda_home=/usr/local), else
/usr/local/cuda. Then what makes it usable: a runnable ``bin/nvcc`` (run
with a timeout: a hung nvcc must not hang us), ``lib64/libcudart.so``,
``include/cuda_runtime.h``, and its version from nvcc, ``version.json`` or
the toolkit's dist-info. Other installed toolkits are listed so a fix can
point CUDA_HOME at one that matches the runtime.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
from typing import Any, Dict, List, Optional

from fidoctor import proc
from fidoctor.flashinfer.cudart import cuda_home_problems, parse_nvcc_version
from fidoctor.fsutil import lstat_info, read_head

NAME = "toolkit"
BUDGET_S = 15.0
ORDER = 5
NVCC_TIMEOUT_S = 10.0
DEFAULT_HOME = "/usr/local/cuda"
_DIST = re.compile(r"^nvidia_cuda_(runtime|nvcc)(?:_cu\d+)?-(\d+\.\d+\.\d+)\.dist-info$")


def resolve_home(env: Dict[str, str]) -> Dict[str, Any]:
    """FlashInfer's ``get_cuda_path()`` as data: which source won and the steps tried."""
    steps: List[str] = []
    for var in ("CUDA_HOME", "CUDA_PATH"):
        val = env.get(var)
        if val:
            steps.append(f"{var}={val!r}")
            return {"source": var, "value": val, "path": val, "steps": steps}
        steps.append(f"{var} {'empty' if val == '' else 'unset'}")
    nvcc = shutil.which("nvcc", path=env.get("PATH", ""))
    if nvcc:
        home = os.path.dirname(os.path.dirname(nvcc))
        steps.append(f"which nvcc → {nvcc} (on the target's PATH) → cuda_home={home}")
        return {"source": "which nvcc", "value": nvcc, "path": home, "steps": steps}
    steps.append("no nvcc on the target's PATH")
    steps.append(f"default {DEFAULT_HOME}")
    return {"source": "default", "value": DEFAULT_HOME, "path": DEFAULT_HOME, "steps": steps}


def _version_json(home: str) -> Dict[str, Any]:
    path = os.path.join(home, "version.json")
    head = read_head(path, 1 << 16)
    if head is None:
        return {"path": path, "present": os.path.lexists(path)}
    try:
        raw = json.loads(head.decode("utf-8", "replace"))
        return {"path": path, "present": True,
                "cuda": (raw.get("cuda") or {}).get("version"),
                "cuda_cudart": (raw.get("cuda_cudart") or {}).get("version"),
                "cuda_nvcc": (raw.get("cuda_nvcc") or {}).get("version")}
    except (ValueError, AttributeError) as e:
        return {"path": path, "present": True, "error": f"malformed version.json: {e}"}


def _dist_info(home: str) -> Dict[str, str]:
    """Versions from a pip-assembled toolkit's ``dist-info/`` (as /usr/local/cuda-13.0 here)."""
    out: Dict[str, str] = {}
    try:
        names = os.listdir(os.path.join(home, "dist-info"))
    except OSError:
        return out
    for n in names:
        m = _DIST.match(n)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def _file(path: str) -> Dict[str, Any]:
    info = lstat_info(path)
    out: Dict[str, Any] = {"path": path, "kind": info["kind"]}
    if info["kind"] == "symlink":
        try:
            os.stat(path)
            out["realpath"] = os.path.realpath(path)
            out["target_kind"] = lstat_info(out["realpath"])["kind"]
        except OSError as e:
            out["error"] = "symlink loop" if e.errno == 40 else (e.strerror or str(e))
    return out


def _nvcc(home: str, env: Dict[str, str]) -> Dict[str, Any]:
    path = env.get("FLASHINFER_NVCC") or os.path.join(home, "bin", "nvcc")
    out: Dict[str, Any] = {"path": path, "override": bool(env.get("FLASHINFER_NVCC"))}
    out.update({k: v for k, v in _file(path).items() if k != "path"})
    if out["kind"] == "absent":
        return out
    r = proc.run([path, "--version"], timeout=NVCC_TIMEOUT_S, env=env)
    out["ok"] = r.ok
    out["result"] = r.describe()
    out["timed_out"] = r.timed_out
    out["banner"] = (r.stdout or "")[-600:]
    v = parse_nvcc_version(r.stdout) if r.ok else None
    if r.ok and v is None:
        out["result"] = "ran, but printed no 'release X.Y, VX.Y.Z' line"
    out["version"] = v
    return out


def describe(home: str, env: Dict[str, str], run_nvcc: bool = True) -> Dict[str, Any]:
    """Everything about one toolkit dir that decides whether FlashInfer can use it."""
    info = lstat_info(home)
    out: Dict[str, Any] = {"path": home, "kind": info["kind"], "problems": cuda_home_problems(home)}
    if info["kind"] == "symlink":
        out["realpath"] = os.path.realpath(home)
    out["exists"] = os.path.isdir(home)
    out["nvcc"] = _nvcc(home, env) if run_nvcc else None
    out["version_json"] = _version_json(home)
    out["dist_info"] = _dist_info(home)
    out["libcudart"] = _file(os.path.join(home, "lib64", "libcudart.so"))
    out["headers"] = {h: os.path.isfile(os.path.join(home, "include", h))
                      for h in ("cuda_runtime.h", "cuda_fp8.h")}
    version, source = None, None
    nv = (out["nvcc"] or {}).get("version")
    vj = out["version_json"]
    if nv:
        version, source = nv["version"], "nvcc --version"
    elif vj.get("cuda_nvcc") or vj.get("cuda"):
        version, source = vj.get("cuda_nvcc") or vj.get("cuda"), "version.json"
    elif out["dist_info"].get("nvcc"):
        version, source = out["dist_info"]["nvcc"], "dist-info"
    out["version"], out["version_source"] = version, source
    return out


def installed(exclude: Optional[str] = None) -> List[Dict[str, Any]]:
    """Other toolkits under /usr/local (cheap: no nvcc runs)."""
    out = []
    for d in sorted(glob.glob("/usr/local/cuda-*")):
        if not os.path.isdir(d) or d == exclude:
            continue
        vj = _version_json(d)
        di = _dist_info(d)
        m = re.match(r".*/cuda-(\d+\.\d+)$", d)
        version = vj.get("cuda") or di.get("nvcc") or (m.group(1) if m else None)
        out.append({"path": d, "version": version,
                    "has_nvcc": os.access(os.path.join(d, "bin", "nvcc"), os.X_OK),
                    "has_libcudart": os.path.exists(os.path.join(d, "lib64", "libcudart.so"))})
    return out


def gather(ctx, done) -> Dict[str, Any]:
    env = ctx.env
    chosen = resolve_home(env)
    out: Dict[str, Any] = {"resolution": chosen, "toolkit": describe(chosen["path"], env)}
    out["torch_nvcc"] = env.get("PYTORCH_NVCC")
    out["installed"] = installed()
    return out
