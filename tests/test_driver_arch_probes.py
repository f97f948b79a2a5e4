"""cuda-driver-too-old and cache-arch-mismatch.

This box has no NVIDIA driver and no GPU, so both are inconclusive here for real (tested).
Where a driver must answer, the stand-ins of test_gpu.py are used, as that file says: a
gcc-built ``libcuda.so.1`` exporting ``cuDriverGetVersion`` (found through the target's
LD_LIBRARY_PATH, asked in a child process by the real ``gpu`` gatherer) and an
``nvidia-smi`` script printing what the real one printed on the H200 (compute 9.0). The
toolkit is the real CUDA 13.0 nvcc; the module build.ninja files are FlashInfer's own."""

from __future__ import annotations

import os
import shutil

import pytest
from conftest import diagnose_box
from test_gpu import NO_DRIVER, fake_smi, stub_libcuda
from toolchain_helpers import fi_generated_modules

from fidoctor.probes.cache_arch_mismatch import covers

pytestmark = pytest.mark.timeout(600)
REAL = "/usr/local/cuda"


@pytest.fixture(autouse=True)
def own_tool_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def found(diag, fid):
    return [f for f in diag.findings if f.id == fid]


def reasons(diag, fid):
    return [i.reason for i in diag.inconclusive if i.probe == fid]


@pytest.mark.skipif(not NO_DRIVER, reason="a real driver is loaded here")
def test_no_driver_no_gpu_is_inconclusive_for_both(box):
    box.module(box.workspace(arch="80"), "m")
    diag = diagnose_box(box)
    assert not found(diag, "cuda-driver-too-old") and not found(diag, "cache-arch-mismatch")
    assert "no NVIDIA driver" in reasons(diag, "cuda-driver-too-old")[0]
    assert "no GPU" in reasons(diag, "cache-arch-mismatch")[0]


def test_driver_for_cuda_12_2_with_a_cuda_13_toolkit(box, tmp_path):
    if not os.access(f"{REAL}/bin/nvcc", os.X_OK):
        pytest.skip("no real nvcc at /usr/local/cuda")
    lib = stub_libcuda(tmp_path / "drv", "535.104.05", 12020)
    [f] = found(diagnose_box(box, CUDA_HOME=REAL, LD_LIBRARY_PATH=str(lib)),
                "cuda-driver-too-old")
    assert f.severity == "error" and f.data["kind"] == "major" and f.data["driver_cuda"] == "12.2"
    assert any(n["what"].startswith("the toolkit") and n["version"].startswith("13.")
               for n in f.data["needs"])
    assert f.data["affects"] == ["*"]
    assert any("cudaErrorInsufficientDriver" in e for e in f.evidence)


def test_driver_for_cuda_13_is_quiet(box, tmp_path):
    lib = stub_libcuda(tmp_path / "drv", "580.159.04", 13000)
    diag = diagnose_box(box, CUDA_HOME=REAL, LD_LIBRARY_PATH=str(lib))
    assert not found(diag, "cuda-driver-too-old")
    assert not reasons(diag, "cuda-driver-too-old")


def test_same_major_older_minor_is_a_warning(box, tmp_path):
    from cudart_helpers import make_toolkit

    tk = make_toolkit(tmp_path / "tk", release="12.9", full="12.9.86")
    lib = stub_libcuda(tmp_path / "drv", "550.54.14", 12040)
    [f] = found(diagnose_box(box, CUDA_HOME=str(tk), LD_LIBRARY_PATH=str(lib)),
                "cuda-driver-too-old")
    assert f.severity == "warning" and f.data["kind"] == "minor" and f.data["affects"] == []


def h200_env(tmp_path):
    smi = fake_smi(tmp_path / "smi")
    return {"PATH": f"{smi}:{os.environ['PATH']}"}


def test_sm80_cache_on_an_h200(box, tmp_path):
    d = box.module(box.workspace(arch="80"), "old_module")
    [f] = found(diagnose_box(box, **h200_env(tmp_path)), "cache-arch-mismatch")
    assert f.severity == "warning" and f.data["gpus"] == ["9.0"]
    assert f.data["modules"] == {"old_module": ["80"]} and f.data["affects"] == ["old_module"]
    assert any(str(d) in e and "sm_80" in e for e in f.evidence)


def test_flashinfer_sm90a_modules_on_an_h200_are_quiet(box, tmp_path, tmp_path_factory):
    gen = fi_generated_modules(tmp_path_factory.mktemp("figen"))
    ws = box.workspace()
    shutil.copytree(gen["release"], ws / "cached_ops" / gen["release"].name)
    box.module(box.workspace(arch="90a"), "other")
    diag = diagnose_box(box, **h200_env(tmp_path))
    assert not found(diag, "cache-arch-mismatch")
    assert not reasons(diag, "cache-arch-mismatch")
    assert diag.snapshot.data("toolchain")["modules"][gen["release"].name]["gencode"] == ["90a"]


@pytest.mark.parametrize("arch, cc, ok", [
    ("90a", "9.0", True), ("90a", "10.0", False), ("80", "8.6", True), ("86", "8.0", False),
    ("80", "9.0", False), ("100f", "10.3", True), ("100a", "10.3", False), ("120f", "12.1", True),
])
def test_binary_compatibility_rules(arch, cc, ok):
    assert covers(arch, cc) is ok
