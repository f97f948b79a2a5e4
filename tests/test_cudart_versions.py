"""Runtime versions are read, never guessed from a SONAME (issue 12, item 6).

``libcudart.so.11.0`` is the SONAME — and pip's file name — of *every* CUDA 11.x
runtime. NVIDIA's real ``nvidia-cuda-runtime-cu11==11.8.89`` wheel ships exactly
that file; reading its name as "11.0" produced a false cuda-version-skew with advice
to install CUDA 11.0. The venv is real (``venv --without-pip``, the wheel unpacked,
dist-info included); torch is the gcc-built stand-in of cudart_helpers (RPATH and
NEEDED exactly as the cu118 wheels link), since torch itself is 800 MB.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cudart_helpers import (
    PY,
    WHEEL_12_4,
    WHEEL_12_9,
    cudart_wheel,
    extract_cudart,
    gcc_so,
    make_toolkit,
    seed_env,
    unpack_wheel,
)

from fidoctor.diagnosis import diagnose, target_summary
from fidoctor.flashinfer.cudart import version_from_filename
from fidoctor.report.versions import rows
from fidoctor.snapshot.context import build_context
from fidoctor.snapshot.runner import gather_snapshot

CU11 = "11.8.89"
SECTIONS = ["target", "toolkit", "cudart"]


@pytest.fixture(scope="module")
def cu11(tmp_path_factory):
    root = tmp_path_factory.mktemp("cu11")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = venv / "lib" / PY / "site-packages"
    unpack_wheel(cudart_wheel(CU11, "nvidia-cuda-runtime-cu11"), site)
    lib = site / "nvidia" / "cuda_runtime" / "lib"
    torch = site / "torch"
    (torch / "lib").mkdir(parents=True)
    (torch / "version.py").write_text("__version__ = '2.0.1+cu118'\ncuda = '11.8'\n")
    (torch / "__init__.py").write_text("from .version import __version__\n")
    gcc_so(torch / "lib" / "libtorch_cuda.so",
           "int cudaGetDeviceCount(int *);\nint f(void) { int n; return cudaGetDeviceCount(&n); }\n",
           [f"-L{lib}", "-l:libcudart.so.11.0", "-Wl,--disable-new-dtags",
            "-Wl,-rpath,$ORIGIN/../../nvidia/cuda_runtime/lib"])
    dist = site / "torch-2.0.1+cu118.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: torch\nVersion: 2.0.1+cu118\n")
    return {"root": root, "python": venv / "bin" / "python", "lib": lib / "libcudart.so.11.0"}


def _snap(cu11, env):
    return gather_snapshot(build_context(python=str(cu11["python"]), env=env), only=SECTIONS,
                           inline=True)


def test_a_soname_is_not_a_version():
    assert version_from_filename("/x/nvidia/cuda_runtime/lib/libcudart.so.11.0") is None
    assert version_from_filename("/x/libcudart.so.12") is None
    assert version_from_filename("/usr/local/cuda/lib64/libcudart.so.11.8.89") == "11.8.89"


def test_pip_cu11_runtime_reads_its_package_version(cu11, tmp_path):
    snap = _snap(cu11, seed_env(tmp_path, None, tmp_path / "xdg"))
    cud = snap.data("cudart")
    loaded = cud["loaded"][0]
    lib = cud["libraries"][loaded["path"]]
    assert loaded["soname"] == "libcudart.so.11.0"
    assert (lib["version"], lib["version_source"]) == \
        (CU11, "package metadata (nvidia-cuda-runtime-cu11)")
    assert target_summary(snap)["cuda_runtime"] == CU11
    table = {r[0]: r for r in rows(snap)}
    assert table["libcudart the target loads"][1] == CU11
    assert table["pip CUDA runtime"][1:] == (CU11, "nvidia-cuda-runtime-cu11")


def test_a_copy_outside_any_package_is_asked_not_named(cu11, tmp_path):
    """Real files preloaded from a plain dir: 12.4's own cudaRuntimeGetVersion answers without
    a driver; 11.8's needs one (error 35 here), so only the major is known — never "11.0"."""
    d = tmp_path / "lib"
    d.mkdir()
    c11 = Path(shutil.copy(cu11["lib"], d / "libcudart.so.11.0"))
    c12 = extract_cudart(WHEEL_12_4, d / "libcudart.so.12")
    env = seed_env(tmp_path, None, tmp_path / "xdg", LD_PRELOAD=f"{c11}:{c12}")
    libs = _snap(cu11, env).data("cudart")["libraries"]
    assert libs[str(c12)]["version"] == "12.4"
    assert libs[str(c12)]["version_source"] == "file itself: cudaRuntimeGetVersion() = 12040"
    assert libs[str(c11)]["version"] == "11"
    assert libs[str(c11)]["version_source"].startswith("SONAME only (major version); the "
                                                       "library's own cudaRuntimeGetVersion()")


def test_no_false_skew_on_a_cuda_11_box(cu11, tmp_path):
    """nvcc 11.8 and pip's 11.8.89 runtime: the same minor, nothing to report."""
    tk = make_toolkit(tmp_path, runtime=WHEEL_12_9, release="11.8", full="11.8.89")
    snap = _snap(cu11, seed_env(tmp_path, tk, tmp_path / "xdg"))
    assert (snap.data("toolkit")["toolkit"]["version"]) == "11.8.89"
    diag = diagnose(snap)
    skew = [f for f in diag.findings if f.id == "cuda-version-skew"]
    assert skew == [], [f.title for f in skew]
    assert not any("11.0" in c for f in diag.findings for x in f.fixes for c in x.commands)
