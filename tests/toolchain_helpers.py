"""Real old toolchains for the toolchain probes, fetched once and cached.

- NVIDIA's CUDA 11.8 compiler: Debian bookworm's non-free ``nvidia-cuda-toolkit``
  (11.8.89~11.8.0-5~deb12u1) carries the real ``nvcc``, ``cicc``, ``cudafe++``,
  ``ptxas``, ``fatbinary``, ``nvlink``, ``bin2c`` and libdevice. It is fetched
  with ``apt-get download`` through a *private* apt state (its own sources list
  with ``non-free``, lists and cache under the test cache: the machine's apt
  state is never touched) and unpacked with ``dpkg-deb -x``. Headers
  (``cuda_runtime.h``, ``crt/host_config.h``) and ``libcudart.so.11.0`` come
  from NVIDIA's ``nvidia-cuda-runtime-cu11`` / ``nvidia-cuda-nvcc-cu11`` 11.8.89
  wheels; everything is laid out as the runfile installs it (``bin/``,
  ``nvvm/bin/cicc``, ``targets/x86_64-linux/{include,lib}``, ``include`` and
  ``lib64`` links, the runfile's 11.x ``nvcc.profile``). With this box's gcc 12
  it fails for real with ``unsupported GNU version!`` and refuses
  ``compute_90a``.
- Debian's gcc-11 (gcc-11, g++-11, cpp-11, libgcc-11-dev, libstdc++-11-dev),
  unpacked the same way: gcc is relocatable, so ``CC=…/usr/bin/gcc-11`` works
  from the test cache (the supported host compiler of the healthy twin).

Built under ``$FIDOCTOR_TEST_CACHE`` behind a lock file, so parallel test
processes build each once; a ``.complete`` marker makes later calls instant.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import List

import pytest

CUDA118_DEB = "nvidia-cuda-toolkit"
GCC11_DEBS = ["gcc-11", "g++-11", "cpp-11", "libgcc-11-dev", "libstdc++-11-dev", "gcc-11-base"]
CU11_WHEELS = ["nvidia-cuda-nvcc-cu11==11.8.89", "nvidia-cuda-runtime-cu11==11.8.89"]
NVCC_PROFILE_11 = """
TOP              = $(_HERE_)/..

NVVMIR_LIBRARY_DIR = $(TOP)/$(_NVVM_BRANCH_)/libdevice

LD_LIBRARY_PATH += $(TOP)/lib:
PATH            += $(TOP)/$(_NVVM_BRANCH_)/bin:$(_HERE_):

INCLUDES        +=  "-I$(TOP)/$(_TARGET_DIR_)/include" $(_SPACE_)

LIBRARIES        =+ $(_SPACE_) {libs}

CUDAFE_FLAGS    +=
PTXAS_FLAGS     +=
""".format(libs='"-L$(TOP)/$(_TARGET_DIR_)/lib$(_TARGET_SIZE_)/stubs" '
                '"-L$(TOP)/$(_TARGET_DIR_)/lib$(_TARGET_SIZE_)"')


def cache_root() -> Path:
    root = Path(os.environ.get("FIDOCTOR_TEST_CACHE") or Path.home() / ".cache" / "fidoctor-test")
    root.mkdir(parents=True, exist_ok=True)
    return root


class _Lock:
    def __init__(self, path: Path) -> None:
        self.f = open(path, "a+")  # noqa: SIM115 - closed in __exit__

    def __enter__(self):
        fcntl.flock(self.f, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.f, fcntl.LOCK_UN)
        self.f.close()


def _mirrors() -> List[str]:
    """The machine's own Debian mirrors (deb822 or one-line sources), else deb.debian.org."""
    text = ""
    for p in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        try:
            text += p.read_text() + "\n"
        except OSError:
            pass
    urls = re.findall(r"(?:URIs:|deb)\s+(https?://\S+)", text)
    main = next((u for u in urls if "security" not in u), "http://deb.debian.org/debian")
    sec = next((u for u in urls if "security" in u), "http://deb.debian.org/debian-security")
    return [f"deb {main.rstrip('/')} bookworm main non-free",
            f"deb {main.rstrip('/')} bookworm-updates main non-free",
            f"deb {sec.rstrip('/')} bookworm-security main non-free"]


def _apt_download(names: List[str], dest: Path) -> None:
    """``apt-get download`` through a private apt state under the test cache."""
    state = cache_root() / "apt-state"
    for d in ("lists/partial", "cache/archives/partial"):
        (state / d).mkdir(parents=True, exist_ok=True)
    src = state / "sources.list"
    src.write_text("\n".join(_mirrors()) + "\n")
    opts = [f"-oDir::Etc::SourceList={src}", "-oDir::Etc::SourceParts=/dev/null",
            f"-oDir::State::Lists={state / 'lists'}", f"-oDir::Cache={state / 'cache'}",
            "-oDebug::NoLocking=1", "-oAPT::Sandbox::User=root"]
    if not list((state / "lists").glob("*Packages*")):
        r = subprocess.run(["apt-get", *opts, "update"], capture_output=True, text=True,
                           timeout=600)
        if r.returncode != 0:
            pytest.fail(f"apt-get update (private state) failed: {r.stderr[-800:]}")
    dest.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["apt-get", *opts, "download", *names], cwd=dest, capture_output=True,
                       text=True, timeout=900)
    if r.returncode != 0:
        pytest.fail(f"apt-get download {' '.join(names)} failed: {r.stderr[-800:]}")


def _unpack_debs(debs: Path, root: Path) -> None:
    for deb in sorted(debs.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)


def _wheels(dest: Path) -> List[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
         "--platform", "manylinux2014_x86_64", "--python-version", "3.11", *CU11_WHEELS,
         "-d", str(dest)], capture_output=True, text=True, timeout=600)
    whls = sorted(dest.glob("nvidia_cuda_*cu11-11.8.89-*.whl"))
    if r.returncode != 0 or len(whls) != 2:
        pytest.fail(f"pip download {CU11_WHEELS} failed: {(r.stderr or r.stdout)[-800:]}")
    return whls


def cuda118() -> Path:
    """CUDA_HOME of a real CUDA 11.8 toolkit (runfile layout), built once."""
    home = cache_root() / "cuda-11.8-v1"
    if (home / ".complete").exists():
        return home
    with _Lock(cache_root() / "cuda-11.8-v1.lock"):
        if (home / ".complete").exists():
            return home
        work = cache_root() / "cuda-11.8-v1.work"
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
        _apt_download([CUDA118_DEB], work / "debs")
        _unpack_debs(work / "debs", work / "root")
        whl_root = work / "whl"
        for w in _wheels(work / "wheels"):
            with zipfile.ZipFile(w) as z:
                z.extractall(whl_root)
        usr = work / "root" / "usr"
        tgt = home / "targets" / "x86_64-linux"
        (home / "bin" / "crt").mkdir(parents=True)
        (home / "nvvm" / "bin").mkdir(parents=True)
        (tgt / "lib").mkdir(parents=True)
        tk_bin = usr / "lib" / "nvidia-cuda-toolkit" / "bin"
        shutil.copy2(tk_bin / "nvcc", home / "bin" / "nvcc")
        for tool in ("cudafe++", "ptxas", "fatbinary", "nvlink", "bin2c"):
            shutil.copy2(usr / "bin" / tool, home / "bin" / tool)
        for stub in (tk_bin / "crt").iterdir():
            shutil.copy2(stub, home / "bin" / "crt" / stub.name)
        shutil.copy2(tk_bin / "cicc", home / "nvvm" / "bin" / "cicc")
        shutil.copytree(usr / "lib" / "nvidia-cuda-toolkit" / "libdevice",
                        home / "nvvm" / "libdevice")
        shutil.copytree(whl_root / "nvidia" / "cuda_runtime" / "include", tgt / "include")
        shutil.copytree(whl_root / "nvidia" / "cuda_nvcc" / "include", tgt / "include",
                        dirs_exist_ok=True)
        (tgt / "include" / "__init__.py").unlink(missing_ok=True)
        shutil.copy2(whl_root / "nvidia" / "cuda_runtime" / "lib" / "libcudart.so.11.0",
                     tgt / "lib" / "libcudart.so.11.0")
        os.symlink("libcudart.so.11.0", tgt / "lib" / "libcudart.so")
        os.symlink("targets/x86_64-linux/include", home / "include")
        os.symlink("targets/x86_64-linux/lib", home / "lib64")
        (home / "bin" / "nvcc.profile").write_text(NVCC_PROFILE_11)
        (home / "version.json").write_text('{"cuda": {"name": "CUDA SDK", "version": "11.8.0"}}\n')
        shutil.rmtree(work, ignore_errors=True)
        (home / ".complete").write_text("nvidia-cuda-toolkit 11.8.89 (Debian bookworm non-free) "
                                        "+ cu11 11.8.89 wheels\n")
    return home


def gcc11() -> Path:
    """The ``usr/bin`` dir of Debian's gcc-11/g++-11, unpacked (relocatable), built once."""
    root = cache_root() / "gcc-11-v1"
    if (root / ".complete").exists():
        return root / "usr" / "bin"
    with _Lock(cache_root() / "gcc-11-v1.lock"):
        if (root / ".complete").exists():
            return root / "usr" / "bin"
        work = cache_root() / "gcc-11-v1.work"
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
        _apt_download(GCC11_DEBS, work)
        _unpack_debs(work, root)
        shutil.rmtree(work, ignore_errors=True)
        (root / ".complete").write_text(" ".join(GCC11_DEBS) + "\n")
    return root / "usr" / "bin"


GEN_SCRIPT = r"""
import os, sys, torch
from flashinfer.jit.attention import gen_single_decode_module
out = {}
for label, hd, verbose in (("release", 64, "0"), ("debug", 128, "1")):
    os.environ["FLASHINFER_JIT_VERBOSE"] = verbose
    m = gen_single_decode_module(torch.float16, torch.float16, torch.float16, hd, hd, 0,
                                 False, False)
    m.write_ninja()
    print(label, m.name)
"""


def fi_generated_modules(base: Path) -> dict:
    """Module dirs whose build.ninja real FlashInfer 0.7.2 wrote (``JitSpec.write_ninja``),
    for sm_90a with /usr/local/cuda: ``release`` (default flags) and ``debug``
    (``FLASHINFER_JIT_VERBOSE=1``, which implies ``-O0 --device-debug``). Nothing compiled."""
    from warmup_helpers import build_env, target_venv

    py = target_venv()
    env = build_env(py.parent.parent, base)
    r = subprocess.run([str(py), "-c", GEN_SCRIPT], env=env, capture_output=True, text=True,
                       timeout=300)
    if r.returncode != 0:
        pytest.fail(f"FlashInfer write_ninja failed: {r.stderr[-1500:]}")
    ops = base / ".cache" / "flashinfer" / "0.7.2.post1" / "90a" / "cached_ops"
    out = {}
    for line in r.stdout.splitlines():
        label, _, name = line.partition(" ")
        if label in ("release", "debug"):
            out[label] = ops / name
    return out
