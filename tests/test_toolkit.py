"""The CUDA toolkit FlashInfer would use: resolution order, malformed values, broken parts.

Toolkit dirs are built for real (libcudart and cuda_runtime.h from NVIDIA's
12.9.79 wheel); their ``bin/nvcc`` is a script printing a real-format
``nvcc --version`` banner, because a real CUDA 12.x nvcc cannot be installed
on this machine. One nvcc blocks forever, ignoring SIGTERM: fidoctor must
time out and leave no process behind. The real CUDA 13.0 nvcc is used where
the test is about a real one.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Dict, List

import psutil
import pytest
from conftest import run_cli
from cudart_helpers import make_toolkit, make_venv, seed_env

from fidoctor.snapshot.gather import toolkit as tkmod

pytestmark = pytest.mark.timeout(120)


def diag(tmp_path: Path, env: Dict[str, str], python: str = None) -> Dict:
    args = ["diagnose", "--json"] + (["--python", python] if python else [])
    r = run_cli(args, env=env)
    assert "Traceback" not in r.stderr, r.stderr
    d = json.loads(r.stdout)
    # These venvs hold the stand-in torch and no FlashInfer, on an empty workspace: where no
    # other finding fires diagnose says "not checked" (exit 2, flashinfer-not-installed), and
    # the toolkit probes have still run; any other exit 2 is a failure.
    ids = {f["id"] for f in d["findings"]}
    assert r.returncode in (0, 1) or (r.returncode == 2 and "flashinfer-not-installed" in ids), \
        (r.returncode, ids, r.stderr)
    return d


def findings(d: Dict, fid: str) -> List[Dict]:
    return [f for f in d["findings"] if f["id"] == fid]


def env_for(tmp_path: Path, **kw: str) -> Dict[str, str]:
    env = seed_env(tmp_path / "base", None, tmp_path / "fc")
    env.update(kw)
    return env


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    return make_toolkit(tmp_path_factory.mktemp("good"))


def test_resolution_order(tmp_path, good):
    other = make_toolkit(tmp_path / "o", release="12.8", full="12.8.93")
    path = f"{other / 'bin'}:/usr/bin:/bin"
    r = tkmod.resolve_home({"CUDA_HOME": str(good), "CUDA_PATH": str(other), "PATH": path})
    assert (r["source"], r["path"]) == ("CUDA_HOME", str(good))
    r = tkmod.resolve_home({"CUDA_HOME": "", "CUDA_PATH": str(other), "PATH": path})
    assert (r["source"], r["path"]) == ("CUDA_PATH", str(other))
    assert r["steps"][0] == "CUDA_HOME empty"
    r = tkmod.resolve_home({"PATH": path})
    assert (r["source"], r["path"]) == ("which nvcc", str(other))
    r = tkmod.resolve_home({"PATH": str(tmp_path / "empty")})
    assert (r["source"], r["path"]) == ("default", "/usr/local/cuda")


def test_good_toolkit_is_quiet_and_versioned(tmp_path, good):
    d = diag(tmp_path, env_for(tmp_path, CUDA_HOME=str(good)))
    assert not findings(d, "cuda-toolkit-unusable")
    snap = tmp_path / "s.json"
    run_cli(["snapshot", "-o", str(snap)], env=env_for(tmp_path, CUDA_HOME=str(good)))
    t = json.loads(snap.read_text())["sections"]["toolkit"]["data"]["toolkit"]
    assert (t["version"], t["version_source"]) == ("12.9.86", "nvcc --version")
    assert t["version_json"]["cuda_cudart"] == "12.9.79"


@pytest.mark.parametrize("value", [":{tk}", "{tk}:", "{tk}:/usr/local/cuda"])
def test_malformed_cuda_home(tmp_path, good, value):
    v = value.format(tk=good)
    d = diag(tmp_path, env_for(tmp_path, CUDA_HOME=v))
    [f] = findings(d, "cuda-toolkit-unusable")
    assert f["severity"] == "error" and f["data"]["value"] == v
    assert "malformed" in f["data"]["missing"]
    assert any("contains ':'" in e for e in f["evidence"])


def test_which_nvcc_wrapper_gives_a_bad_cuda_home(tmp_path, good):
    """A /usr/local/bin/nvcc-style wrapper: cuda_home becomes its bin's parent."""
    wrap = tmp_path / "local" / "bin"
    wrap.mkdir(parents=True)
    (wrap / "nvcc").write_text(f"#!/bin/sh\nexec {good}/bin/nvcc \"$@\"\n")
    (wrap / "nvcc").chmod(0o755)
    env = env_for(tmp_path, PATH=f"{wrap}:/usr/bin:/bin")
    [f] = findings(diag(tmp_path, env), "cuda-toolkit-unusable")
    assert f["data"]["source"] == "which nvcc" and f["data"]["toolkit_path"] == str(
        tmp_path / "local")
    assert set(f["data"]["missing"]) == {"libcudart", "headers"}  # nvcc itself runs


@pytest.mark.parametrize("break_it, code", [
    ("no_nvcc", "nvcc"), ("garbage_nvcc", "nvcc"), ("no_headers", "headers"),
    ("no_libcudart", "libcudart"), ("libcudart_loop", "libcudart"), ("no_dir", "dir"),
])
def test_broken_parts_are_named(tmp_path, break_it, code):
    tk = make_toolkit(tmp_path, nvcc={"no_nvcc": "missing", "garbage_nvcc": "garbage"}.get(
        break_it, "banner"))
    if break_it == "no_headers":
        (tk / "include" / "cuda_runtime.h").unlink()
    elif break_it == "no_libcudart":
        (tk / "lib64" / "libcudart.so").unlink()
    elif break_it == "libcudart_loop":
        (tk / "lib64" / "libcudart.so").unlink()
        os.symlink("libcudart.so.x", tk / "lib64" / "libcudart.so")
        os.symlink("libcudart.so", tk / "lib64" / "libcudart.so.x")
    elif break_it == "no_dir":
        shutil.rmtree(tk)
    [f] = findings(diag(tmp_path, env_for(tmp_path, CUDA_HOME=str(tk))), "cuda-toolkit-unusable")
    assert code in f["data"]["missing"]
    if break_it == "libcudart_loop":
        assert any("symlink loop" in e for e in f["evidence"])
    if break_it == "garbage_nvcc":
        assert any("no 'release X.Y" in e for e in f["evidence"])


@pytest.mark.timeout(90)
def test_hanging_nvcc_times_out_and_leaves_nothing(tmp_path):
    tk = make_toolkit(tmp_path, nvcc="hang")
    t0 = time.monotonic()
    [f] = findings(diag(tmp_path, env_for(tmp_path, CUDA_HOME=str(tk))), "cuda-toolkit-unusable")
    assert time.monotonic() - t0 < 60
    assert f["data"]["missing"] == ["nvcc"]
    assert any("hung" in e for e in f["evidence"])
    time.sleep(0.5)
    left = [p.pid for p in psutil.process_iter(["cmdline"])
            if any(str(tk) in a for a in (p.info["cmdline"] or []))]
    for pid in left:  # never leave them running, even when the assert below fails
        psutil.Process(pid).kill()
    assert left == []


def test_real_nvcc_13_against_torch_12_is_a_major_skew(tmp_path):
    """The real /usr/local/cuda (nvcc 13.0) with a torch built for CUDA 12.4."""
    if not os.access("/usr/local/cuda/bin/nvcc", os.X_OK):
        pytest.skip("no real nvcc at /usr/local/cuda/bin/nvcc")
    v = make_venv(tmp_path, "12.4.127")
    d = diag(tmp_path, env_for(tmp_path, CUDA_HOME="/usr/local/cuda"), python=str(v["python"]))
    assert not findings(d, "cuda-toolkit-unusable")
    skew = findings(d, "cuda-version-skew")
    assert [s["data"]["kind"] for s in skew] == ["major"]
    assert skew[0]["data"]["nvcc_version"].startswith("13.")
    assert skew[0]["data"]["torch_cuda"] == "12.4"


def test_older_nvcc_than_runtime_is_not_skew(tmp_path):
    """nvcc 12.4 with pip's 12.9.79 runtime: builds only need what the runtime has."""
    tk = make_toolkit(tmp_path, runtime="12.4.127", release="12.4", full="12.4.131")
    v = make_venv(tmp_path, "12.9.79")
    d = diag(tmp_path, env_for(tmp_path, CUDA_HOME=str(tk)), python=str(v["python"]))
    assert not findings(d, "cuda-version-skew") and not findings(d, "cuda-toolkit-unusable")
    judged = json.dumps(d["inconclusive"])
    assert "cuda-version-skew" not in judged and "cuda-toolkit-unusable" not in judged, judged


def test_skew_without_cached_modules_still_errors_for_byversion(tmp_path):
    """No module cached yet: nvcc 12.9 vs runtime 12.4.127 (no ByVersion) is still an error,
    because the next sm90/TMA build will need it."""
    tk = make_toolkit(tmp_path)
    v = make_venv(tmp_path, "12.4.127")
    [s] = findings(diag(tmp_path, env_for(tmp_path, CUDA_HOME=str(tk)), python=str(v["python"])),
                   "cuda-version-skew")
    assert s["severity"] == "error" and s["data"]["needs_newer"] == []


def test_minor_skew_with_the_symbol_present_is_a_warning(tmp_path):
    """nvcc 12.9 vs runtime 12.5-or-later lacking nothing ByVersion-related: a warning.
    Built here as toolkit 12.9 (banner) with pip's 12.9.79 runtime but nvcc claiming 12.10."""
    tk = make_toolkit(tmp_path, release="12.10", full="12.10.20")
    v = make_venv(tmp_path, "12.9.79")
    [s] = findings(diag(tmp_path, env_for(tmp_path, CUDA_HOME=str(tk)), python=str(v["python"])),
                   "cuda-version-skew")
    assert s["severity"] == "warning" and s["data"]["kind"] == "minor"
