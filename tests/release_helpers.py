"""Real FlashInfer releases from PyPI, each in its own small venv, for the version matrix.

Every release is downloaded once (``pip download --no-deps``) into
``<test cache>/fi-releases`` and installed once into ``<test cache>/fi-release-<ver>``, under a
lock file, so concurrent tests and CI reuse them. The venvs do not install torch: a ``.pth``
file points at ``<test cache>/cpu-torch-site``, a directory of links to the CPU torch (and its
small dependencies: filelock, ninja, numpy, nvidia-ml-py, setuptools …) of the shared target
venv (warmup_helpers.target_venv), leaving that venv's flashinfer and tvm-ffi out. That keeps
each release venv to the size of its sdist or wheel.

How each family installs (the issue's recipe):
- 0.2.x–0.3.x and 0.4.1 are sdists (PyPI has no wheel of them): downloaded *and* installed
  ``--no-deps --no-build-isolation`` with their build requirements put in the venv first
  (``wheel``, ``setuptools>=77``, ``packaging>=24``). Without that, pip prepares the sdist's
  metadata in an isolated build env even for ``pip download --no-deps``, and 0.3.x's build
  requirements include ``torch``: PyPI's CUDA build plus gigabytes of nvidia-* wheels;
- 0.4.1 pins ``apache-tvm-ffi==0.1.0b15`` (runtime and build), which PyPI no longer serves:
  ``apache-tvm-ffi==0.1.0`` instead, put in the venv before the build;
- 0.5+ are wheels (``--no-deps`` plus tvm-ffi).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from warmup_helpers import _locked, cache_root, target_venv

RELEASES = ("0.2.5", "0.2.6.post1", "0.2.14.post1", "0.3.1.post1", "0.4.1", "0.5.3",
            "0.6.18.post1", "0.7.4")
SDIST = ("0.2.", "0.3.", "0.4.1")  # version prefixes PyPI serves as sdists only
TVM_FFI = {"0.4.1": "apache-tvm-ffi==0.1.0"}
TVM_FFI_DEFAULT = "apache-tvm-ffi==0.1.15.post2"
TORCH_EXTENSION_AT_IMPORT = ("0.4.",)  # import flashinfer -> tvm-ffi compiles c_dlpack
LEFT_OUT = ("flashinfer", "tvm_ffi", "apache_tvm_ffi", "__pycache__", "_distutils_hack")


def torch_extensions_dir(version: str):
    """TORCH_EXTENSIONS_DIR for ``version``'s tests, or None. With 0.4.x (apache-tvm-ffi
    0.1.0), ``import flashinfer`` compiles tvm-ffi's ``c_dlpack`` torch extension (≈ 90 s of
    g++ here) under TORCH_EXTENSIONS_DIR; it is compiled once, at install, into the venv."""
    if not version.startswith(TORCH_EXTENSION_AT_IMPORT):
        return None
    return cache_root() / f"fi-release-{version}" / "torch-extensions"


def versions_for_ci():
    """Every release of the matrix (bench/bench_releases.py installs them all)."""
    return list(RELEASES)


def torch_site() -> Path:
    """Links to the target venv's CPU torch and friends, without its FlashInfer."""
    py = Path(target_venv())
    site = Path(subprocess.run([str(py), "-c", "import torch, os; "
                                "print(os.path.dirname(os.path.dirname(torch.__file__)))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    d = cache_root() / f"cpu-torch-site-{py.parent.parent.name}"
    done = d / ".fidoctor-complete"
    if done.exists():
        return d
    with _locked(cache_root() / (d.name + ".lock")):
        if done.exists():
            return d
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        for e in sorted(site.iterdir()):
            if e.name.startswith(LEFT_OUT) or e.suffix == ".pth":
                continue
            (d / e.name).symlink_to(e)
        done.write_text("ok\n")
    return d


def installed(version: str) -> bool:
    return (cache_root() / f"fi-release-{version}" / ".fidoctor-complete").exists()


def release_python(version: str) -> Path:
    """The interpreter of a venv holding the real flashinfer-python ``version`` from PyPI."""
    venv = cache_root() / f"fi-release-{version}"
    py = venv / "bin" / "python"
    done = venv / ".fidoctor-complete"
    if done.exists():
        return py
    site_dir = torch_site()
    base = Path(target_venv()).resolve()
    with _locked(cache_root() / (venv.name + ".lock")):
        if done.exists():
            return py
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([str(base), "-m", "venv", str(venv)], check=True)
        sp = Path(subprocess.run([str(py), "-c", "import sysconfig; "
                                  "print(sysconfig.get_paths()['purelib'])"],
                                 capture_output=True, text=True, check=True).stdout.strip())
        (sp / "cpu_torch.pth").write_text(f"{site_dir}\n")
        pip = [str(py), "-m", "pip", "-q", "--disable-pip-version-check"]
        env = dict(os.environ, PIP_NO_INPUT="1")
        sdist = version.startswith(SDIST)
        if sdist:
            # Before the download: pip prepares an sdist's metadata even for `download
            # --no-deps`, and with build isolation that installs its build requirements
            # (0.3.x: torch, from PyPI: the CUDA build and gigabytes of nvidia-* wheels).
            build_deps = ["wheel", "setuptools>=77", "packaging>=24"]
            if version in TVM_FFI:  # 0.4.1's build requires pin the beta PyPI dropped
                build_deps.append(TVM_FFI[version])
            subprocess.run(pip + ["install", "--no-deps"] + build_deps, check=True, env=env)
        dl = cache_root() / "fi-releases"
        dl.mkdir(parents=True, exist_ok=True)
        subprocess.run(pip + ["download", "--no-deps", "-d", str(dl)]
                       + (["--no-build-isolation"] if sdist else [])
                       + [f"flashinfer-python=={version}"], check=True, env=env, cwd=str(venv))
        files = [f for f in dl.iterdir() if f.name.startswith(f"flashinfer_python-{version}")
                 and f.name[len(f"flashinfer_python-{version}")] in ".-"]
        assert files, f"pip download left no flashinfer-python {version} in {dl}"
        install = pip + ["install", "--no-deps"]
        if sdist:
            subprocess.run(install + ["--no-build-isolation", str(files[0])], check=True,
                           env=env, cwd=str(venv))
        else:
            subprocess.run(install + [str(files[0]), TVM_FFI.get(version, TVM_FFI_DEFAULT)],
                           check=True, env=env)
        ext = torch_extensions_dir(version)
        if ext is not None:
            with tempfile.TemporaryDirectory() as home:
                subprocess.run([str(py), "-c", "import flashinfer"], check=True, cwd=home,
                               env=dict(env, TORCH_EXTENSIONS_DIR=str(ext),
                                        FLASHINFER_WORKSPACE_BASE=home,
                                        FLASHINFER_CUDA_ARCH_LIST="9.0a"))
        done.write_text("ok\n")
    return py


def install(versions, jobs: int = 1, report=None) -> None:
    """Install ``versions``, ``jobs`` at a time (threads: an install is subprocesses and
    waiting); ``report(version, seconds, python)`` after each, in order."""
    import concurrent.futures as cf

    def one(v):
        t = time.monotonic()
        py = release_python(v)
        return v, time.monotonic() - t, py

    with cf.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for v, secs, py in pool.map(one, versions):
            if report is not None:
                report(v, secs, py)


if __name__ == "__main__":
    # python tests/release_helpers.py [--jobs N] VERSION…: what test_versions.py starts in the
    # background on a cold cache (and bench/bench_releases.py times).
    args = sys.argv[1:]
    n = 1
    if args[:1] == ["--jobs"]:
        n, args = int(args[1]), args[2:]
    install(args or list(RELEASES), n)
