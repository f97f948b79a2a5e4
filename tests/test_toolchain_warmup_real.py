"""A real FlashInfer 0.7.2 build with NVIDIA's real CUDA 11.8 nvcc (tests/toolchain_helpers.py):
``fidoctor warmup`` compiles in the cached target venv, the build dies at its first nvcc
call, and the verdict names the toolchain cause instead of offering a rebuild; then the
healthy twin (``CC=gcc-11``, ``FLASHINFER_CUDA_ARCH_LIST=8.0``) leaves only the flag that
11.8 cannot take, which the same nvcc really refuses."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from toolchain_helpers import cuda118, gcc11
from warmup_helpers import build_env, target_venv

pytestmark = pytest.mark.timeout(600)
CAUSES = {"host-compiler-unsupported", "nvcc-arch-unsupported", "nvcc-flag-unsupported"}


def warmup(tmp_path, **extra):
    py = target_venv()
    env = build_env(py.parent.parent, tmp_path / "base", cuda_home=str(cuda118()),
                    extra=dict({"XDG_STATE_HOME": str(tmp_path / "st"),
                                "XDG_CACHE_HOME": str(tmp_path / "cache")}, **extra))
    r = subprocess.run([sys.executable, "-m", "fidoctor", "warmup", "--python", str(py),
                        "--modules", "single-decode:f16:64", "--json"],
                       env=env, capture_output=True, text=True, timeout=500)
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    return json.loads(r.stdout), env


def ninja_output(module_dir: str, env) -> str:
    r = subprocess.run(["ninja", "-C", module_dir, "-f", "build.ninja"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    return r.stdout + r.stderr


def test_warmup_failure_names_the_toolchain_cause(tmp_path):
    doc, env = warmup(tmp_path, FLASHINFER_CUDA_ARCH_LIST="9.0a")
    [f] = [f for f in doc["findings"] if f["id"] == "warmup-build-failed"]
    assert f["caused_by"] in CAUSES
    assert all(fx["id"] != "quarantine-module" for fx in f["fixes"])
    out = ninja_output(doc["modules"][0]["module_dir"], env)
    assert any(s in out for s in ("unsupported GNU version", "Unsupported gpu architecture",
                                  "Unknown option '--compress-mode=size'"))


def test_with_gcc11_and_sm80_only_the_flag_is_left(tmp_path):
    g11 = gcc11()
    doc, env = warmup(tmp_path, FLASHINFER_CUDA_ARCH_LIST="8.0", CC=str(g11 / "gcc-11"),
                      CXX=str(g11 / "g++-11"))
    [f] = [f for f in doc["findings"] if f["id"] == "warmup-build-failed"]
    assert f["caused_by"] == "nvcc-flag-unsupported"
    assert "nvcc fatal   : Unknown option '--compress-mode=size'" in ninja_output(
        doc["modules"][0]["module_dir"], env)
