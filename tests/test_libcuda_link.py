"""cuda-toolkit-unusable, extended: nothing to link ``-lcuda`` against.

Real parts: this box has no NVIDIA driver and its real CUDA 13.0 toolkit (/usr/local/cuda,
pip-assembled) has no ``lib64/stubs``, so a real FlashInfer build here ends in
``cannot find -lcuda`` (knowledge/real-builds-on-cpu.md). The search dirs are the real
ones: ``$cuda_home/lib64[/stubs]``, FLASHINFER_EXTRA_LDFLAGS, LIBRARY_PATH, ``c++
-print-search-dirs`` and ``ld --verbose``. The quiet twins add a gcc-built stub
``libcuda.so`` the way build hosts without a GPU do (FLASHINFER_EXTRA_LDFLAGS, or a
toolkit's own ``lib64/stubs``)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import diagnose_box
from cudart_helpers import make_toolkit
from warmup_helpers import stub_libcuda

from fidoctor.fixes import FixContext, choose

pytestmark = pytest.mark.timeout(300)
REAL = "/usr/local/cuda"


@pytest.fixture(autouse=True)
def own_tool_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def unusable(diag):
    return [f for f in diag.findings if f.id == "cuda-toolkit-unusable"]


def real_link(tmp_path, *ldflags):
    (tmp_path / "m.c").write_text("int f(void) { return 1; }\n")
    subprocess.run(["c++", "-x", "c", "-c", "-fPIC", "m.c", "-o", "m.o"], cwd=tmp_path, check=True)
    return subprocess.run(["c++", "m.o", "-shared", *ldflags, "-lcudart", "-lcuda", "-o", "m.so"],
                          cwd=tmp_path, capture_output=True, text=True)


def test_nothing_provides_lcuda(box, tmp_path):
    import os

    if os.path.exists(f"{REAL}/lib64/stubs/libcuda.so"):
        pytest.skip("this machine's toolkit has a libcuda stub")
    diag = diagnose_box(box, CUDA_HOME=REAL, FLASHINFER_EXTRA_LDFLAGS="")
    [f] = unusable(diag)
    assert f.data["missing"] == ["libcuda"] and f.data["affects"] == ["*"]
    assert f"{REAL}/lib64/stubs" in f.data["libcuda_searched"]
    assert any("nothing to link -lcuda against" in e and "default dirs" in e for e in f.evidence)
    assert all(x.safety != "safe" for x in f.fixes)  # no stub anywhere here: nothing safe
    ctx = FixContext(txid="t", state=str(tmp_path / "s"), env={}, python=sys.executable)
    plan, declined = choose(f, ctx)
    assert plan.fix_id == "cuda-home-advice" and plan.manual and "-lcuda" in plan.why
    assert not plan.env  # nothing is written: no stub here to point at
    # the real link agrees
    r = real_link(tmp_path, f"-L{REAL}/lib64", f"-L{REAL}/lib64/stubs")
    assert r.returncode != 0 and "cannot find -lcuda" in r.stderr


def test_a_stub_in_extra_ldflags_is_quiet(box, tmp_path):
    stub = stub_libcuda()
    diag = diagnose_box(box, CUDA_HOME=REAL, FLASHINFER_EXTRA_LDFLAGS=f"-O1 -L {stub}")
    assert not unusable(diag)
    found = diag.snapshot.data("toolchain")["link"]["found"]
    assert found == f"{stub}/libcuda.so"
    assert real_link(tmp_path, f"-L{REAL}/lib64", f"-L{stub}").returncode == 0


def test_a_toolkit_with_stubs_is_quiet(box, tmp_path):
    tk = make_toolkit(tmp_path)
    diag = diagnose_box(box, CUDA_HOME=str(tk), FLASHINFER_EXTRA_LDFLAGS="")
    assert not unusable(diag)
    assert diag.snapshot.data("toolchain")["link"]["found"] == str(tk / "lib64" / "stubs" /
                                                                   "libcuda.so")


def test_library_path_counts(box, tmp_path):
    diag = diagnose_box(box, CUDA_HOME=REAL, FLASHINFER_EXTRA_LDFLAGS="",
                        LIBRARY_PATH=str(stub_libcuda()))
    assert not unusable(diag)
