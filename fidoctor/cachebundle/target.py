"""What a cache bundle is checked against: the facts of one target environment.

Read from the same gatherers diagnose uses (``target``: versions and package
dirs, found without importing torch; ``toolkit``: ``cuda_home`` resolved as
FlashInfer's ``get_cuda_path()`` does, the string, never the realpath, and
nvcc's version), plus the ``ninja`` FlashInfer runs (the first on the
target's PATH) and the workspace FlashInfer ≥ 0.4.1 uses:
``$FLASHINFER_WORKSPACE_BASE/.cache/flashinfer/<version>/<arch>``.

The arch dir comes from ``--arch``, else the target's
``FLASHINFER_CUDA_ARCH_LIST``, else the GPUs' compute capability (the ``gpu``
section), normalized as FlashInfer 0.7 does (``9.0`` → ``90a``; majors 9 and
≥ 10 get ``a`` when no suffix is given); without any of them fidoctor does not
guess.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from fidoctor import proc
from fidoctor.cachebundle.ninjafiles import log_version_for, parse_ninja_version
from fidoctor.errors import FidoctorError

NINJA_TIMEOUT_S = 5.0
# What FlashInfer 0.7 reads from the environment when it writes build.ninja (jit/cpp_ext.py,
# jit/core.py) besides CUDA_HOME and the arch list: a different value in the target means
# another build.ninja there, so ninja rebuilds (or relinks) whatever was imported.
BUILD_ENV = ("CC", "CXX", "FLASHINFER_NVCC", "FLASHINFER_NVCC_THREADS",
             "FLASHINFER_EXTRA_CFLAGS", "FLASHINFER_EXTRA_CUDAFLAGS", "FLASHINFER_EXTRA_LDFLAGS",
             "FLASHINFER_CXX_LAUNCHER", "FLASHINFER_NVCC_LAUNCHER", "FLASHINFER_JIT_DEBUG",
             "FLASHINFER_JIT_VERBOSE", "FLASHINFER_JIT_LINEINFO")
_ARCH = re.compile(r"^(\d+)\.(\d+)([af]?)$")


def arch_dir(arch_list: str) -> str:
    """``"9.0a"`` / ``"8.0 9.0"`` → ``"90a"`` / ``"80_90a"`` (FlashInfer 0.7's dir name)."""
    items = []
    for tok in arch_list.replace(";", " ").replace(",", " ").split():
        m = _ARCH.match(tok.strip())
        if not m:
            raise FidoctorError(f"arch {tok!r}: expected MAJOR.MINOR[a|f], e.g. 9.0a")
        major, minor, suffix = int(m.group(1)), m.group(2), m.group(3)
        if not suffix and (major == 9 or major >= 10):
            suffix = "a"
        items.append((major, minor + suffix))
    if not items:
        raise FidoctorError("empty arch list", "pass --arch 9.0a (H100/H200)")
    return "_".join(f"{a}{b}" for a, b in sorted(set(items)))


def _real(p: Optional[str]) -> Optional[str]:
    return os.path.realpath(p) if p else None


def _major_minor(v: Optional[str]) -> Optional[Tuple[int, int]]:
    m = re.match(r"(\d+)\.(\d+)", v or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


@dataclass
class Target:
    """One environment's side of a bundle (the builder's in the manifest, the importer's here)."""

    python: str
    flashinfer_version: Optional[str]
    flashinfer_dir: Optional[str]      # realpath of the flashinfer package dir
    tvm_ffi_dir: Optional[str]         # realpath of tvm_ffi (its include dirs are in build.ninja)
    site_dir: Optional[str]            # realpath of the interpreter's platlib
    root: str                          # $BASE/.cache/flashinfer
    arch: Optional[str]                # workspace arch dir, e.g. 90a
    cuda_home: str                     # the string FlashInfer puts in build.ninja
    cuda_home_real: str
    toolkit_version: Optional[str]     # nvcc's X.Y.Z
    cuda_runtime: Optional[str]        # pip's nvidia-cuda-runtime version, if any
    torch_version: Optional[str]
    torch_cuda: Optional[str]
    python_version: Optional[str]
    ninja: Optional[str]
    ninja_version: Optional[str]
    build_env: Dict[str, str] = field(default_factory=dict)  # BUILD_ENV keys that are set
    problems: List[str] = field(default_factory=list)

    @property
    def workspace(self) -> Optional[str]:
        if not self.flashinfer_version or not self.arch:
            return None
        return os.path.join(self.root, self.flashinfer_version, self.arch)

    @property
    def log_version(self) -> Optional[int]:
        v = parse_ninja_version(self.ninja_version or "")
        return log_version_for(v) if v else None

    @property
    def cuda_major_minor(self) -> Optional[Tuple[int, int]]:
        return _major_minor(self.toolkit_version)

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["workspace"] = self.workspace
        return d

    def require_usable(self, what: str) -> None:
        """Refuse (exit 2) when a fact every check needs is missing."""
        if self.problems:
            raise FidoctorError(f"cannot {what}: " + "; ".join(self.problems),
                                "pass --python /path/to/serving-venv/bin/python (and --arch "
                                "9.0a on a box without a GPU)")


def _ninja(env: Dict[str, str]) -> Tuple[Optional[str], Optional[str]]:
    path = shutil.which("ninja", path=env.get("PATH", ""))
    if not path:
        return None, None
    r = proc.run([path, "--version"], timeout=NINJA_TIMEOUT_S, env=env)
    return path, (r.stdout.strip() if r.ok else None)


def from_snapshot(snap: Any, env: Dict[str, str], arch: Optional[str]) -> Target:
    """Build the facts from a snapshot holding the ``target`` and ``toolkit`` sections."""
    t = snap.data("target")
    tk = snap.data("toolkit")
    ctx = snap.context
    pkgs = t.get("packages") or {}
    mods = t.get("modules") or {}
    fi = (pkgs.get("flashinfer-python") or pkgs.get("flashinfer") or {}).get("version")
    runtime = next((pkgs[n]["version"] for n in ("nvidia-cuda-runtime-cu13",
                                                   "nvidia-cuda-runtime-cu12",
                                                   "nvidia-cuda-runtime") if n in pkgs), None)
    res = tk.get("resolution") or {}
    home = res.get("path") or "/usr/local/cuda"
    tkd = tk.get("toolkit") or {}
    caps = sorted({g["compute_cap"] for g in (snap.data("gpu").get("gpus") or [])
                   if g.get("compute_cap")})
    arch_list = arch or env.get("FLASHINFER_CUDA_ARCH_LIST") or " ".join(caps)
    ninja, ninja_version = _ninja(env)
    out = Target(
        python=ctx.get("python") or "",
        flashinfer_version=fi,
        flashinfer_dir=_real((mods.get("flashinfer") or {}).get("dir")),
        tvm_ffi_dir=_real((mods.get("tvm_ffi") or {}).get("dir")),
        site_dir=_real(t.get("platlib")),
        root=ctx.get("flashinfer_root") or "",
        arch=arch_dir(arch_list) if arch_list else None,
        cuda_home=home, cuda_home_real=os.path.realpath(home),
        toolkit_version=tkd.get("version"),
        cuda_runtime=runtime,
        torch_version=(t.get("torch") or {}).get("version") or (pkgs.get("torch") or {}).get(
            "version"),
        torch_cuda=(t.get("torch") or {}).get("cuda"),
        python_version=t.get("version"),
        ninja=ninja, ninja_version=ninja_version,
        build_env={k: env[k] for k in BUILD_ENV if k in env})
    if not t.get("usable"):
        out.problems.append(f"the target interpreter {out.python} is unusable "
                            f"({t.get('reason') or 'not gathered'})")
    elif not fi or not out.flashinfer_dir:
        out.problems.append(f"no FlashInfer in {out.python}")
    if not out.arch:
        out.problems.append("the target's arch is unknown (no --arch, no "
                            "FLASHINFER_CUDA_ARCH_LIST, no GPU)")
    if not out.toolkit_version:
        out.problems.append(f"no usable nvcc under cuda_home={home} (FlashInfer reads its "
                            "version to write build.ninja)")
    if not ninja:
        out.problems.append("no ninja on the target's PATH (FlashInfer runs it on every load)")
    elif out.log_version is None:
        out.problems.append(f"cannot read the version of {ninja}")
    return out


def gather_target(ctx: Any, arch: Optional[str]) -> Target:
    """Gather just what a bundle needs (target, toolkit, gpu: a few hundred ms)."""
    from fidoctor.snapshot.runner import gather_snapshot

    snap = gather_snapshot(ctx, only=["target", "toolkit", "gpu"])
    return from_snapshot(snap, ctx.env, arch)


def _shown(v: Optional[str]) -> str:
    return "unset" if v is None else repr(v)


def mismatches(built: Dict[str, Any], here: Target) -> List[str]:
    """Why modules built with ``built`` (a manifest's ``source``) must not be used ``here``."""
    out = []
    if built.get("flashinfer_version") != here.flashinfer_version:
        out.append(f"FlashInfer {built.get('flashinfer_version')} built them, the target has "
                   f"{here.flashinfer_version}")
    if built.get("arch") != here.arch:
        out.append(f"built for arch {built.get('arch')}, the target uses {here.arch}")
    bmm = _major_minor(built.get("toolkit_version"))
    if bmm != here.cuda_major_minor:
        out.append(f"built by CUDA {built.get('toolkit_version')} (nvcc), the target's "
                   f"cuda_home={here.cuda_home} is CUDA {here.toolkit_version}")
    benv = built.get("build_env")
    if isinstance(benv, dict):
        for k in BUILD_ENV:
            if benv.get(k) != here.build_env.get(k):
                out.append(f"{k} was {_shown(benv.get(k))} when they were built and is "
                           f"{_shown(here.build_env.get(k))} in the target (FlashInfer would "
                           "write another build.ninja there and rebuild)")
    return out
