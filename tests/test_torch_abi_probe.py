"""torch-abi-mismatch against a real torch: the cached venv's CPU torch 2.13 (built with the
CXX11 ABI) and two modules g++ builds here from one source with opposite
``-D_GLIBCXX_USE_CXX11_ABI``, both linked against that torch's libtorch_cpu/libc10. The
old-ABI one needs ``_ZN5torch3jit17parseSchemaOrNameERKSsb`` (FI#911's symbol); the loader
refuses it for real, and the new-ABI twin loads."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import snapshot_of
from warmup_helpers import target_venv

from fidoctor.diagnosis import diagnose
from fidoctor.elfsyms import defined

pytestmark = pytest.mark.timeout(600)
SRC = """
#include <string>
namespace torch { namespace jit { void* parseSchemaOrName(const std::string&, bool); } }
extern "C" void* fidoctor_probe(void) { return torch::jit::parseSchemaOrName("aten::x", false); }
"""
OLD_SYM = "_ZN5torch3jit17parseSchemaOrNameERKSsb"
NEW_SYM = "_ZN5torch3jit17parseSchemaOrNameERKNSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEEb"


@pytest.fixture(autouse=True)
def own_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.fixture(scope="module")
def py() -> Path:
    return target_venv()


def torch_lib(py: Path) -> Path:
    [d] = py.parent.parent.glob("lib/python*/site-packages/torch/lib")
    return d


def module(box, py: Path, abi: int) -> Path:
    """A 0.2.x-layout cached module whose .so g++ built with the given ABI against torch."""
    ws = box.workspace(version=None, arch="90")
    name = f"torch_linked_abi{abi}"
    d = box.module(ws, name, so="missing")
    src = d / "m.cpp"
    src.write_text(SRC)
    subprocess.run(["g++", "-shared", "-fPIC", f"-D_GLIBCXX_USE_CXX11_ABI={abi}", str(src),
                    "-o", str(d / f"{name}.so"), f"-L{torch_lib(py)}", "-ltorch_cpu", "-lc10"],
                   check=True, capture_output=True)
    src.unlink()
    return d / f"{name}.so"


def load_in_target(py: Path, so: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(py), "-c", f"import torch, ctypes; ctypes.CDLL({str(so)!r}); "
                           "print('loaded')"], capture_output=True, text=True, timeout=300)


def venv_020(py: Path, tmp_path: Path) -> Path:
    """A venv that sees the real CPU torch (its package dir linked in) and a stand-in
    flashinfer-python 0.2.0 (a package dir and its dist-info): 0.2.x cannot be installed
    with a CPU torch here (its bindings need CUDA torch's headers), and only its version
    matters to the probe (0.2.x loads from the unversioned cache layout)."""
    import sys as _sys

    venv = tmp_path / "venv"
    subprocess.run([_sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    [site] = venv.glob("lib/python*/site-packages")
    real_site = torch_lib(py).parent.parent
    (site / "torch").symlink_to(real_site / "torch")
    for dist in real_site.glob("torch-*.dist-info"):
        (site / dist.name).symlink_to(dist)
    fi = site / "flashinfer"
    fi.mkdir()
    (fi / "__init__.py").write_text("")
    (site / "flashinfer_python-0.2.0.dist-info").mkdir()
    (site / "flashinfer_python-0.2.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: flashinfer-python\nVersion: 0.2.0\n")
    return venv / "bin" / "python"


def abi_findings(box, py):
    diag = diagnose(snapshot_of(box, python=str(py)))
    return diag, [f for f in diag.findings if f.id == "torch-abi-mismatch"]


def test_old_abi_module_against_cxx11_torch(box, py, tmp_path):
    """The module sits in the unversioned layout, which a 0.2.x target loads from."""
    so = module(box, py, abi=0)
    diag, [f] = abi_findings(box, venv_020(py, tmp_path))
    assert f.severity == "error" and f.data["kind"] == "cached"
    assert f.data["missing"] == [OLD_SYM] and f.data["abi_twins"] == {OLD_SYM: NEW_SYM}
    assert f.data["affects"] == [so.parent.name]
    assert any("-D_GLIBCXX_USE_CXX11_ABI=0, torch with 1" in e for e in f.evidence)
    assert f.fixes[0].id == "quarantine-module"
    r = load_in_target(py, so)  # the real loader agrees
    assert r.returncode != 0 and f"undefined symbol: {OLD_SYM}" in r.stderr


def test_matching_abi_module_is_quiet_and_loads(box, py, tmp_path):
    so = module(box, py, abi=1)
    diag, found = abi_findings(box, venv_020(py, tmp_path))
    assert found == []
    assert not [i for i in diag.inconclusive if i.probe == "torch-abi-mismatch"]
    entry = diag.snapshot.data("torch_abi")["modules"][str(so)]
    assert entry["needs"] == 1 and entry["missing"] == []
    assert "loaded" in load_in_target(py, so).stdout


def test_old_abi_leftover_the_target_never_loads_is_not_an_error(box, py):
    """A 0.2.x leftover (the unversioned layout) with the old-ABI module, and the real
    FlashInfer 0.7.2 target, which loads only from ``0.7.2.post1/<arch>``: no error "loading
    it fails" and no "safe" rebuild the target would never do; cache-stale-version names the
    dir as unused, and diagnose exits 0 (it said error, exit 1)."""
    import json
    import os
    import sys

    so = module(box, py, abi=0)
    env = box.env(XDG_CACHE_HOME=os.environ["XDG_CACHE_HOME"])
    r = subprocess.run([sys.executable, "-m", "fidoctor", "diagnose", "--python", str(py),
                        "--json"], env=env, capture_output=True, text=True, timeout=300)
    doc = json.loads(r.stdout)
    assert [f["id"] for f in doc["findings"]] == ["cache-stale-version"], doc["findings"]
    [stale] = doc["findings"]
    assert stale["severity"] == "info" and str(so.parent.parent.parent) in stale["data"][
        "workspaces"]
    assert r.returncode == 0, r.stderr
    assert load_in_target(py, so).returncode != 0  # broken, but nothing the target loads


def test_tvm_ffi_modules_need_no_torch(box, py):
    """0.7.x modules (here: the gcc-built stand-in with no torch NEEDED) are not looked at."""
    box.module(box.workspace(), "plain")
    diag, found = abi_findings(box, py)
    assert found == [] and diag.snapshot.data("torch_abi")["modules"] == {}


def test_gnu_hash_lookup_agrees_with_nm(py):
    lib = torch_lib(py) / "libc10.so"
    out = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True,
                         text=True, check=True).stdout.split("\n")
    defs = [ln.split()[-1].split("@")[0] for ln in out if ln.strip()][::7][:400]
    und = [ln.split()[-1].split("@")[0] for ln in subprocess.run(
        ["nm", "-D", "--undefined-only", str(lib)], capture_output=True, text=True,
        check=True).stdout.split("\n") if ln.strip()][:200]
    got = defined(str(lib), defs + und + ["no_such_symbol_anywhere"])
    assert all(got[d] for d in defs)
    assert not any(got[u] for u in und) and not got["no_such_symbol_anywhere"]


def test_old_layout_module_without_torch_symbols_needs_no_torch(box):
    """A 0.2.x-layout module that needs nothing of torch, and a target without torch: quiet,
    and not inconclusive either (there is nothing to look up)."""
    box.module(box.workspace(version=None, arch="90"), "plain")
    diag = diagnose(snapshot_of(box))
    assert not [f for f in diag.findings if f.id == "torch-abi-mismatch"]
    assert not [i for i in diag.inconclusive if i.probe == "torch-abi-mismatch"]


def test_prebuilt_aot_kernels_of_the_wrong_abi(box, py, tmp_path):
    """An installed FlashInfer whose prebuilt ``flashinfer_kernels.abi3.so`` (FI#911's file
    name; 0.2.x AOT wheels are not on PyPI, so g++ builds it here with the old ABI against
    the real torch) in a venv that sees the real CPU torch (its package dir linked in)."""
    venv = venv_020(py, tmp_path)
    [fi] = venv.parent.parent.glob("lib/python*/site-packages/flashinfer")
    src = tmp_path / "k.cpp"
    src.write_text(SRC)
    so = fi / "flashinfer_kernels.abi3.so"
    subprocess.run(["g++", "-shared", "-fPIC", "-D_GLIBCXX_USE_CXX11_ABI=0", str(src), "-o",
                    str(so), f"-L{torch_lib(py)}", "-Wl,--no-as-needed", "-ltorch_cpu", "-lc10"],
                   check=True, capture_output=True)
    diag, [f] = abi_findings(box, venv)
    assert f.data["kind"] == "prebuilt" and f.data["missing"] == [OLD_SYM]
    assert f.data["affects"] == [] and f.fixes[0].id == ""
    assert "wheel built for this torch" in f.fixes[0].description


@pytest.mark.parametrize("abi", [0, 1])
def test_warmup_check_agrees_the_old_abi_module_cannot_load(box, py, tmp_path, abi):
    """``warmup --check --python`` said "ok" (exit 0) for the old-ABI module that diagnose
    (rightly: the real loader refuses it) calls torch-abi-mismatch, error; its twin loads.
    Now "unloadable" with the finding (exit 1); the twin stays ok. Found by QA."""
    import json

    from conftest import run_cli

    so = module(box, py, abi=abi)
    target = venv_020(py, tmp_path)
    env = box.env()
    c = run_cli(["warmup", "--check", "--python", str(target), "--json"], env=env, timeout=300)
    t = run_cli(["warmup", "--check", "--python", str(target)], env=env, timeout=300)
    d = run_cli(["diagnose", "--python", str(target), "--json"], env=env, timeout=300)
    [row] = json.loads(c.stdout)["workspaces"][0]["modules"]
    ids = [f["id"] for f in json.loads(d.stdout)["findings"]]
    if abi == 0:
        assert "torch-abi-mismatch" in ids, ids
        assert (row["state"], row["complete"]) == ("unloadable", False), row
        assert row["problem"].startswith("torch-abi-mismatch: "), row
        assert [f["id"] for f in json.loads(c.stdout)["findings"]] == ["torch-abi-mismatch"]
        assert c.returncode == 1 and t.returncode == 1, c.stderr
        assert "UNLOADABLE  torch-abi-mismatch: " in t.stdout and so.parent.name in t.stdout
        assert "1 module(s) the target cannot load" in t.stdout, t.stdout
    else:
        assert "torch-abi-mismatch" not in ids, ids
        assert row["state"] == "ok" and c.returncode == 0, (row, c.stderr)
