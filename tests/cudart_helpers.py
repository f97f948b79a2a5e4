"""Seed-like boxes for the libcudart tests, built for real.

- NVIDIA's real ``nvidia-cuda-runtime-cu12`` wheels (12.4.127 lacks
  ``cudaGetDriverEntryPointByVersion``, 12.9.79 has it) are downloaded once
  with ``pip download --no-deps`` into $FIDOCTOR_TEST_CACHE (default
  ~/.cache/fidoctor-test) and *installed by unpacking*, dist-info included,
  into a real venv (``python -m venv --without-pip``), so importlib.metadata
  reports the real version.
- A stand-in ``torch`` package (torch itself is 800 MB): ``torch/version.py``
  with ``cuda = '12.4'``, a dist-info, and ``torch/lib/libtorch_cuda.so``
  built by gcc with RPATH ``$ORIGIN/../../nvidia/cuda_runtime/lib`` and
  NEEDED ``libcudart.so.12``, exactly as the cu124 wheels link it. Its
  ``__init__`` loads that library RTLD_GLOBAL, as torch's global deps do.
- A toolkit dir holding 12.9.79's libcudart, the real ``cuda_runtime.h`` from
  the same wheel, a version.json, and a ``bin/nvcc`` *script* printing a real
  ``nvcc --version`` banner: a real 12.x nvcc cannot be installed here (the
  pip nvcc-cu12 wheel has no nvcc driver; /usr/local/cuda is 13.0).
- Module ``.so`` files built by gcc against that libcudart, in a FlashInfer
  cache layout: one calls ``cudaGetDriverEntryPointByVersion``, one not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Dict, List, Optional

import pytest

WHEEL_12_4 = "12.4.127"
WHEEL_12_9 = "12.9.79"
TORCH_VERSION = "2.6.0+cu124"
BYVERSION_MOD = "fmha_sm90_tma"
PLAIN_MOD = "single_decode_f16"
PY = f"python{sys.version_info[0]}.{sys.version_info[1]}"

NVCC_BANNER = """#!/bin/sh
# Stand-in for a CUDA {rel} nvcc (none can be installed on this CPU box): prints the real banner.
if [ "$1" = "--version" ]; then
cat <<'EOF'
nvcc: NVIDIA (R) Cuda compiler driver
Copyright (c) 2005-2025 NVIDIA Corporation
Built on Tue_May_27_02:21:03_PDT_2025
Cuda compilation tools, release {rel}, V{full}
Build cuda_{rel}.r{rel}/compiler.36037853_0
EOF
exit 0
fi
echo "nvcc stand-in: only --version is supported" >&2
exit 1
"""


def test_cache() -> Path:
    d = Path(os.environ.get("FIDOCTOR_TEST_CACHE") or Path.home() / ".cache" / "fidoctor-test")
    (d / "wheels").mkdir(parents=True, exist_ok=True)
    return d


def cudart_wheel(version: str, package: str = "nvidia-cuda-runtime-cu12") -> Path:
    """The real wheel, downloaded once (``pip download --no-deps``) and cached."""
    wheels = test_cache() / "wheels"
    stem = package.replace("-", "_")
    hits = sorted(wheels.glob(f"{stem}-{version}-*.whl"))
    if hits:
        return hits[0]
    r = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
         "--platform", "manylinux2014_x86_64", "--python-version", "3.11",
         f"{package}=={version}", "-d", str(wheels)],
        capture_output=True, text=True, timeout=300)
    hits = sorted(wheels.glob(f"{stem}-{version}-*.whl"))
    if r.returncode != 0 or not hits:
        pytest.fail(f"cannot download {package}=={version}: "
                    f"{(r.stderr or r.stdout)[-500:]}")
    return hits[0]


def unpack_wheel(whl: Path, site: Path) -> None:
    with zipfile.ZipFile(whl) as z:
        z.extractall(site)
    for so in site.glob("nvidia/*/lib/*.so*"):
        so.chmod(0o755)


def extract_cudart(version: str, dest: Path) -> Path:
    """libcudart.so.12 from the real wheel, written to ``dest``."""
    with zipfile.ZipFile(cudart_wheel(version)) as z:
        dest.write_bytes(z.read("nvidia/cuda_runtime/lib/libcudart.so.12"))
    dest.chmod(0o755)
    return dest


def gcc_so(out: Path, source: str, args: List[str]) -> Path:
    src = out.with_suffix(".c")
    src.write_text(source)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(out), str(src), *args], check=True,
                   capture_output=True)
    src.unlink()
    return out


def make_venv(root: Path, runtime: str, torch_cuda: str = "12.4",
              flashinfer: Optional[str] = None, runpath: bool = False) -> Dict[str, Path]:
    """A real venv with pip's libcudart ``runtime`` and the stand-in torch in site-packages."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = venv / "lib" / PY / "site-packages"
    unpack_wheel(cudart_wheel(runtime), site)
    pip_lib = site / "nvidia" / "cuda_runtime" / "lib"
    torch = site / "torch"
    (torch / "lib").mkdir(parents=True)
    (torch / "version.py").write_text(
        f"__version__ = '{TORCH_VERSION}'\ncuda = '{torch_cuda}'\ngit_version = 'stand-in'\n")
    (torch / "__init__.py").write_text(
        "# Stand-in torch: loads its CUDA library globally, as torch's global deps do.\n"
        "import ctypes, os\n"
        "_lib = ctypes.CDLL(os.path.join(os.path.dirname(__file__), 'lib', "
        "'libtorch_cuda.so'), ctypes.RTLD_GLOBAL)\n"
        "from .version import __version__\n")
    gcc_so(torch / "lib" / "libtorch_cuda.so",
           "int cudaGetDeviceCount(int *);\n"
           "int torch_cuda_device_count(void) { int n = 0; cudaGetDeviceCount(&n); return n; }\n",
           [f"-L{pip_lib}", "-l:libcudart.so.12",
            "-Wl,--enable-new-dtags" if runpath else "-Wl,--disable-new-dtags",
            "-Wl,-rpath,$ORIGIN/../../nvidia/cuda_runtime/lib"])
    dist = site / f"torch-{TORCH_VERSION}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torch\nVersion: {TORCH_VERSION}\n"
                                   f"Requires-Dist: nvidia-cuda-runtime-cu12=={WHEEL_12_4}\n")
    if flashinfer:
        fi = site / f"flashinfer_python-{flashinfer}.dist-info"
        fi.mkdir()
        (fi / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: flashinfer-python\nVersion: {flashinfer}\n")
    return {"venv": venv, "python": venv / "bin" / "python", "site": site,
            "pip_cudart": pip_lib / "libcudart.so.12", "torch_cuda": torch / "lib" /
            "libtorch_cuda.so"}


def make_toolkit(root: Path, runtime: str = WHEEL_12_9, release: str = "12.9",
                 full: str = "12.9.86", nvcc: str = "banner") -> Path:
    """A toolkit dir: real libcudart + real cuda_runtime.h from the wheel, stand-in nvcc.

    nvcc: "banner" (prints the real-format banner), "hang" (blocks forever,
    ignoring SIGTERM), "missing", "garbage" (prints no release line).
    """
    tk = root / f"cuda-{release}"
    (tk / "lib64").mkdir(parents=True)
    (tk / "bin").mkdir()
    (tk / "include").mkdir()
    real = extract_cudart(runtime, tk / "lib64" / f"libcudart.so.{runtime}")
    os.symlink(real.name, tk / "lib64" / "libcudart.so.12")
    os.symlink("libcudart.so.12", tk / "lib64" / "libcudart.so")
    (tk / "lib64" / "stubs").mkdir()  # as every real toolkit has: -lcuda links against it
    gcc_so(tk / "lib64" / "stubs" / "libcuda.so", "void cuGetErrorString(void) {}\n",
           ["-Wl,-soname,libcuda.so.1"])
    with zipfile.ZipFile(cudart_wheel(runtime)) as z:
        (tk / "include" / "cuda_runtime.h").write_bytes(
            z.read("nvidia/cuda_runtime/include/cuda_runtime.h"))
    (tk / "version.json").write_text(json.dumps(
        {"cuda": {"name": "CUDA SDK", "version": f"{release}.1"},
         "cuda_cudart": {"name": "CUDA Runtime (cudart)", "version": runtime}}))
    nv = tk / "bin" / "nvcc"
    if nvcc == "banner":
        nv.write_text(NVCC_BANNER.format(rel=release, full=full))
    elif nvcc == "hang":
        nv.write_text("#!/bin/sh\n# a wedged nvcc: ignores TERM and never returns\n"
                      "trap '' TERM\nwhile :; do sleep 1; done\n")
    elif nvcc == "garbage":
        nv.write_text("#!/bin/sh\necho 'this is not nvcc'\n")
    if nvcc != "missing":
        nv.chmod(0o755)
    return tk


def make_modules(base: Path, toolkit: Path, fi_version: str = "0.2.5", arch: str = "90"
                 ) -> Dict[str, Path]:
    """Two cached modules linked against the toolkit's libcudart: one needs ByVersion."""
    ws = base / ".cache" / "flashinfer" / arch
    out = {}
    sources = {
        BYVERSION_MOD: (
            "int cudaGetDriverEntryPointByVersion(const char *, void **, unsigned int,\n"
            "                                     unsigned long long, int *);\n"
            "int cudaGetLastError(void);\n"
            "int tma_init(void) { void *fn = 0; int st = 0;\n"
            "  cudaGetDriverEntryPointByVersion(\"cuTensorMapEncodeTiled\", &fn, 12000, 0, &st);\n"
            "  return cudaGetLastError(); }\n"),
        PLAIN_MOD: (
            "int cudaGetDeviceCount(int *);\nint cudaGetLastError(void);\n"
            "int decode(void) { int n = 0; cudaGetDeviceCount(&n); return cudaGetLastError(); }\n"),
    }
    for name, src in sources.items():
        d = ws / "cached_ops" / name
        d.mkdir(parents=True)
        (d / "build.ninja").write_text(f"ninja_required_version = 1.3\nname = {name}\n"
                                       f"cuda_home = {toolkit}\ncxx = c++\n")
        out[name] = gcc_so(d / f"{name}.so", src, [f"-L{toolkit / 'lib64'}", "-lcudart"])
    return out


def seed_env(base: Path, toolkit: Optional[Path], cache: Path, **extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("LD_LIBRARY_PATH", "LD_PRELOAD", "CUDA_HOME", "CUDA_PATH",
                        "CUDA_LIB_PATH", "VIRTUAL_ENV")}
    env["FLASHINFER_WORKSPACE_BASE"] = str(base)
    env["XDG_CACHE_HOME"] = str(cache)  # fidoctor's own caches (ELF facts, JIT log state)
    env["NO_COLOR"] = "1"
    if toolkit is None:  # no driver here: the link's -lcuda needs a stub, as on build hosts
        from warmup_helpers import stub_libcuda

        env["FLASHINFER_EXTRA_LDFLAGS"] = f"-L{stub_libcuda()}"
    if toolkit is not None:
        env["CUDA_HOME"] = str(toolkit)
        env["PATH"] = f"{toolkit / 'bin'}:{env.get('PATH', '')}"
    env.update(extra)
    return env


LOADER_PROBE = r'''
import ctypes, json, sys
out = {}
import torch  # the stand-in: pulls libcudart.so.12 through libtorch_cuda.so's RPATH
for p in sys.argv[2:]:  # then what FlashInfer preloads (RTLD_GLOBAL), as in jit/__init__.py
    ctypes.CDLL(p, ctypes.RTLD_GLOBAL)
try:
    ctypes.CDLL(sys.argv[1])
    out["ok"] = True
except OSError as e:
    out["ok"] = False
    out["error"] = str(e)
out["mapped"] = []
for line in open("/proc/self/maps"):
    f = line.split(None, 5)
    if len(f) == 6 and "libcudart" in f[5] and f[5].strip() not in out["mapped"]:
        out["mapped"].append(f[5].strip())
print(json.dumps(out))
'''


def real_load(python: Path, module: Path, env: Dict[str, str], preload: List[str] = ()
              ) -> Dict[str, object]:
    """Ask the real dynamic loader: import (stand-in) torch, ``preload``, then the module."""
    r = subprocess.run([str(python), "-c", LOADER_PROBE, str(module), *preload], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


class Seed:
    """A full box: venv + toolkit + cache, and the env that points fidoctor at it."""

    def __init__(self, root: Path, runtime: str = WHEEL_12_4, toolkit_runtime: str = WHEEL_12_9,
                 release: str = "12.9", flashinfer: Optional[str] = None,
                 runpath: bool = False) -> None:
        self.root = root
        self.v = make_venv(root, runtime, flashinfer=flashinfer, runpath=runpath)
        self.toolkit = make_toolkit(root, toolkit_runtime, release=release,
                                    full=f"{release}.86")
        self.base = root / "base"
        self.modules = make_modules(self.base, self.toolkit)
        self.cache = root / "fidoctor-cache"

    def env(self, **extra: str) -> Dict[str, str]:
        return seed_env(self.base, self.toolkit, self.cache, **extra)
