"""host-compiler-unsupported on real parts: NVIDIA's CUDA 11.8 nvcc (Debian's non-free
package) with this box's gcc 12 (rejected by its host_config.h, line 132) and Debian's
gcc-11 (accepted), and the real CUDA 13.0 toolkit, which accepts gcc 12. What the probe
claims is checked against the real nvcc compiling a real .cu file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import diagnose_box
from toolchain_helpers import cuda118, gcc11

from fidoctor.fixes import FixContext, choose

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(autouse=True)
def own_tool_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.fixture(scope="module")
def parts():
    return cuda118(), gcc11()


def findings(diag):
    return [f for f in diag.findings if f.id == "host-compiler-unsupported"]


def nvcc_compile(home: Path, cwd: Path, *args: str, env=None):
    (cwd / "k.cu").write_text("__global__ void k(float *x) { x[0] = 1; }\n")
    return subprocess.run([str(home / "bin" / "nvcc"), *args, "-c", "k.cu", "-o", "k.o"],
                          cwd=cwd, capture_output=True, text=True, timeout=180, env=env)


def test_gcc12_rejected_by_cuda_11_8_and_gcc11_offered(box, parts, tmp_path):
    home, g11 = parts
    path = f"{os.environ['PATH']}:{g11}"  # gcc-11 installed, but gcc (12) first
    [f] = findings(diagnose_box(box, CUDA_HOME=str(home), PATH=path))
    assert f.severity == "error" and f.data["affects"] == ["*"]
    assert f.data["error"]["line"] == 132
    assert "unsupported GNU version! gcc versions later than 11" in f.data["error"]["text"]
    assert f.data["compiler"]["via"] == "gcc on the target's PATH"
    assert f.data["suggested"] == {"cc": str(g11 / "gcc-11"), "cxx": str(g11 / "g++-11")}
    assert f.fixes[0].id == "set-host-compiler" and f.fixes[0].safety == "safe"
    if os.path.exists("/usr/local/cuda-13.0/bin/nvcc"):  # this machine's real 13.0 toolkit
        assert f.data["suggested_cuda_home"] == "/usr/local/cuda-13.0"
        assert any(x.id == "cuda-home-advice" and x.safety == "caution" for x in f.fixes)
    # the real nvcc says the same, at the same line
    r = nvcc_compile(home, tmp_path)
    assert r.returncode != 0 and "host_config.h:132:2: error: #error -- unsupported GNU " \
        "version!" in r.stderr
    # and the offered compiler really builds
    assert nvcc_compile(home, tmp_path, "-ccbin", f.data["suggested"]["cc"]).returncode == 0
    ctx = FixContext(txid="t", state=str(tmp_path / "state"), env={}, python=sys.executable)
    plan, _ = choose(f, ctx)
    assert plan.fix_id == "set-host-compiler"
    assert plan.env == {"CC": str(g11 / "gcc-11"), "CXX": str(g11 / "g++-11")}


def test_no_fitting_compiler_means_no_safe_fix(box, parts):
    home, _ = parts
    [f] = findings(diagnose_box(box, CUDA_HOME=str(home), PATH=os.environ["PATH"]))
    assert f.data["suggested"] is None
    assert all(x.safety != "safe" for x in f.fixes)


def test_cc_gcc11_is_the_healthy_twin(box, parts):
    home, g11 = parts
    diag = diagnose_box(box, CUDA_HOME=str(home), CC=str(g11 / "gcc-11"), CXX=str(g11 / "g++-11"))
    assert not findings(diag)
    assert not [i for i in diag.inconclusive if i.probe == "host-compiler-unsupported"]


def test_allow_unsupported_compiler_is_respected(box, parts, tmp_path):
    home, _ = parts
    diag = diagnose_box(box, CUDA_HOME=str(home),
                        FLASHINFER_EXTRA_CUDAFLAGS="-allow-unsupported-compiler")
    assert not findings(diag)
    assert nvcc_compile(home, tmp_path, "-allow-unsupported-compiler").returncode == 0


def test_cuda_13_accepts_gcc12(box):
    if not os.access("/usr/local/cuda/bin/nvcc", os.X_OK):
        pytest.skip("no real nvcc at /usr/local/cuda")
    diag = diagnose_box(box, CUDA_HOME="/usr/local/cuda")
    assert not findings(diag)
    assert not [i for i in diag.inconclusive if i.probe == "host-compiler-unsupported"]


def test_guard_evaluator_on_expressions():
    from fidoctor.flashinfer.hostconfig import evaluate, first_error

    m = {"__GNUC__": "12", "__GNUC_MINOR__": "2", "__clang_major__": "0"}
    assert evaluate("__GNUC__ > 11 || (__GNUC__ == 11 && __GNUC_MINOR__ > 5)", m) == 1
    assert evaluate("!defined(__clang__) && (0x0d010000 < 0x10010000) ? 1 : 0", m) == 1
    assert evaluate("defined __GNUC__ && __ICC != 1500 && 201103L >= 201103", m) == 1
    lines = [[1, "#if defined(__GNUC__)"], [2, "#if __GNUC__ > 11"], [3, "#error -- too new"],
             [4, "#endif"], [5, "#elif defined(_MSC_VER)"], [6, "#error -- msvc"], [7, "#endif"]]
    assert first_error(lines, m)["error"] == {"line": 3, "text": "#error -- too new"}
    assert first_error(lines, dict(m, __GNUC__="11"))["error"] is None
    assert first_error(lines, {"_MSC_VER": "1900"})["error"]["line"] == 6
    bad = first_error([[1, "#if __GNUC__ >"], [2, "#error x"], [3, "#endif"]], m)
    assert bad["error"] is None and bad["unknown"]


def test_a_hanging_host_compiler_costs_no_second_wait_and_leaves_nothing(box, parts, tmp_path):
    """A CC that never answers (a stand-in script ignoring SIGTERM: a wedged compiler cannot
    be built on purpose): host-compiler-unsupported is inconclusive, nothing survives."""
    import time

    import psutil

    home, _ = parts
    cc = tmp_path / "wedged-gcc"
    cc.write_text("#!/bin/sh\ntrap '' TERM\nwhile :; do sleep 1; done\n")
    cc.chmod(0o755)
    t0 = time.monotonic()
    diag = diagnose_box(box, CUDA_HOME=str(home), CC=str(cc))
    took = time.monotonic() - t0
    assert not findings(diag)
    [why] = [i.reason for i in diag.inconclusive if i.probe == "host-compiler-unsupported"]
    assert "hung" in why
    assert "wedged-gcc" not in " ".join(diag.snapshot.data("toolchain")["queries"]["ran"])
    time.sleep(0.5)
    left = [p.pid for p in psutil.process_iter(["cmdline"])
            if any(str(cc) in a for a in (p.info["cmdline"] or []))]
    for pid in left:
        psutil.Process(pid).kill()
    assert left == [], f"left running after {took:.1f} s"


def test_fix_writes_cc_and_the_proof_sees_it_gone_then_undo(box, parts, tmp_path):
    from conftest import run_cli

    home, g11 = parts
    env = box.env(CUDA_HOME=str(home), PATH=f"{os.environ['PATH']}:{g11}",
                  FLASHINFER_CUDA_ARCH_LIST="8.0", XDG_STATE_HOME=str(tmp_path / "st"),
                  XDG_CACHE_HOME=str(tmp_path / "cache"))
    r = run_cli(["fix", "--yes", "--no-warmup", "--only", "host-compiler-unsupported"], env=env,
                timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "host-compiler-unsupported  error     gone" in r.stdout
    env_file = tmp_path / "st" / "fidoctor" / "env.sh"
    assert f"export CC={g11 / 'gcc-11'}" in env_file.read_text()
    r = run_cli(["undo"], env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not env_file.exists()
