"""fidoctor warmup drives every FlashInfer family through its real API (issue 18).

Real releases from PyPI, each in its own venv (release_helpers: one CPU torch shared through a
.pth). On this CPU box the builds of 0.2.x–0.3.x cannot finish: their modules link
``-lc10_cuda -ltorch_cuda`` and include ``c10/cuda`` headers that only CUDA torch wheels ship,
and 0.2.0–0.2.5 build through ``torch.utils.cpp_extension``, whose CUDA_HOME is None under a
CPU torch. What is checked is that warmup reaches each family's real build call (the
generator in 0.2.5, ``JitSpec.build(verbose)`` in 0.2.6, ``build(verbose, need_lock)`` in
0.2.14) with the right lock and module dir, and reports the real reason it stopped — never
the TypeError / ``FileLock(None)`` these releases used to raise.
"""

from __future__ import annotations

import json
import os

import pytest
from conftest import run_cli
from release_helpers import release_python
from warmup_helpers import build_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _warmup(py, base, *extra):
    env = build_env(py.parent.parent, base)
    env.pop("TORCH_CUDA_ARCH_LIST", None)
    r = run_cli(["warmup", "--python", str(py), "--arch", "9.0", "--modules",
                 "single-decode:f16:64", "--sequential", "--json", *extra], env=env, timeout=300)
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    return r, json.loads(r.stdout)


def test_025_generator_build_is_supervised_and_names_the_cpu_torch(tmp_path):
    """Family 0.2.0–0.2.5: the generator call is the build (load_cuda_ops); warmup runs it in
    its child with the module's real name, dir and lock (cached_ops/<name>.lock)."""
    py = release_python("0.2.5")
    r, doc = _warmup(py, tmp_path)
    assert r.returncode == 1, r.stderr
    assert doc["target"]["version"] == "0.2.5" and doc["target"]["family"] == "load_cuda_ops"
    [m] = doc["modules"]
    assert m["status"] == "failed"
    assert m["name"].startswith("single_decode_with_kv_cache_dtype_q_f16")
    assert m["module_dir"] == str(tmp_path / ".cache" / "flashinfer" / "90" / "cached_ops"
                                  / m["name"])
    # The cause first (torch's own misleading "CUDA_HOME … is not set" only quoted after it).
    assert m["error"].startswith("torch.utils.cpp_extension found no CUDA toolkit")
    assert "CPU build" in m["error"]


@pytest.mark.parametrize("version", ["0.2.6.post1", "0.2.14.post1"])
def test_jitspec_families_reach_their_real_ninja_build(tmp_path, version):
    """0.2.6 has build(verbose) and no lock_path; 0.2.14 has build(verbose, need_lock). Both
    used to fail before any build (TypeError / FileLock(None)); now FlashInfer's own ninja
    runs and the real compiler error (CUDA torch headers missing from a CPU torch) is quoted."""
    py = release_python(version)
    r, doc = _warmup(py, tmp_path)
    assert doc["target"]["family"] == "spec"
    [m] = doc["modules"]
    assert m["status"] == "failed", m
    assert "TypeError" not in m["error"] and "NoneType" not in m["error"], m["error"]
    mdir = m["module_dir"]
    assert os.path.exists(os.path.join(mdir, "build.ninja")), "FlashInfer's own build ran"
    lock = os.path.join(os.path.dirname(mdir), "tmp", m["name"] + ".lock")
    assert os.path.exists(lock), "the build took the family's lock (cached_ops/tmp/<name>.lock)"


def test_a_flashinfer_without_jit_is_a_clear_unsupported_result(tmp_path):
    """Stand-in (no real release lacks every family's API and is installable with this CPU
    torch): a package named flashinfer with a version and no flashinfer.jit, as the 0.1.x
    prebuilt-only releases were. The result is warmup-unsupported-version, exit 2, JSON that
    validates against the warmup schema, no traceback."""
    from importlib import resources

    import jsonschema

    py = release_python("0.2.5")
    pkg = tmp_path / "site" / "flashinfer"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("__version__ = '0.1.6'\n")
    env = build_env(py.parent.parent, tmp_path)
    env["PYTHONPATH"] = str(tmp_path / "site")
    r = run_cli(["warmup", "--python", str(py), "--arch", "9.0", "--json"], env=env,
                timeout=300)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    doc = json.loads(r.stdout)
    [f] = doc["findings"]
    assert f["id"] == "warmup-unsupported-version" and "0.1.6" in f["title"]
    assert f["fixes"] and doc["modules"] == []
    schema = json.loads(resources.files("fidoctor").joinpath("schema/warmup.schema.json")
                        .read_text())
    jsonschema.validate(doc, schema)


@pytest.mark.parametrize("version,lock", [
    ("0.2.5", "cached_ops/{name}.lock"),
    ("0.2.14.post1", "cached_ops/tmp/{name}.lock")])
def test_a_real_two_process_lock_wait_is_stalled_and_names_the_holder(tmp_path, version, lock):
    """Another process holds the family's real module lock (a real flock, as a second server
    building the same module would); FlashInfer's own build call in warmup's child blocks on
    it, and warmup stops it after --stall-after naming the holder, which it leaves alone."""
    from warmup_helpers import alive, hold_flock, kill_and_wait

    py = release_python(version)
    _, doc = _warmup(py, tmp_path / "probe", "--plan")
    name = doc["modules"][0]["name"]
    ws = tmp_path / ".cache" / "flashinfer" / "90"
    holder = hold_flock(ws / lock.format(name=name))
    try:
        r, doc = _warmup(py, tmp_path, "--stall-after", "5")
        assert alive([holder.pid]) == [holder.pid], "warmup must not kill the lock's holder"
    finally:
        kill_and_wait(holder)
    [m] = doc["modules"]
    assert m["status"] == "stalled", m
    assert m["verdict"]["data"]["cause"] == "lock-held"
    assert m["verdict"]["data"]["holder_pid"] == holder.pid


@pytest.mark.parametrize("version", ["0.5.3", "0.7.4"])
def test_real_decode_build_then_diagnose_finds_the_layout(tmp_path, version):
    """Families 0.4–0.6 and 0.7: a real decode module compiled by this box's nvcc (the stub
    libcuda and CUDA_HOME of warmup_helpers.build_env), then diagnose finds the versioned
    workspace and the module, and reports it healthy."""
    py = release_python(version)
    env = build_env(py.parent.parent, tmp_path)
    r = run_cli(["warmup", "--python", str(py), "--arch", "9.0a", "--modules",
                 "single-decode:f16:64", "--json"], env=env, timeout=600)
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    [m] = doc["modules"]
    assert m["status"] == "done", (m, r.stderr[-2000:])
    ws = tmp_path / ".cache" / "flashinfer" / version / "90a"
    assert m["module_dir"] == str(ws / "cached_ops" / m["name"])
    assert os.path.getsize(os.path.join(m["module_dir"], m["name"] + ".so")) > 0
    env["FLASHINFER_CUDA_ARCH_LIST"] = "9.0a"
    d = run_cli(["diagnose", "--python", str(py), "--json"], env=env)
    assert "Traceback" not in d.stderr
    diag = json.loads(d.stdout)
    problems = [f["id"] for f in diag["findings"] if f["severity"] in ("error", "warning")]
    assert problems == [], diag["findings"]
    assert diag["target"]["flashinfer"] == version
    from fidoctor.snapshot.context import build_context
    from fidoctor.snapshot.runner import gather_snapshot

    cache = gather_snapshot(build_context(python=str(py), env=env), only=["cache"]).data("cache")
    [w] = [w for w in cache["workspaces"] if w["path"] == str(ws)]
    assert [mod["name"] for mod in w["modules"]] == [m["name"]]


KILLED_BUILD = """
import sys, torch
import flashinfer.jit as jit
gen = getattr(jit, "gen_single_decode_module", None)
if gen is None:
    from flashinfer.jit.attention import gen_single_decode_module as gen
spec = gen(torch.float16, torch.float16, torch.float16, 64, 64, 0, False, False)
print(spec.name, flush=True)
spec.build_and_load()
"""


@pytest.mark.parametrize("version", ["0.5.3", "0.7.4"])
def test_a_real_sigkill_of_a_first_call_build_is_found(tmp_path, procs, version):
    """The server's first call builds the module (FlashInfer's own build_and_load); it is
    SIGKILLed while nvcc runs. diagnose names the module: its orphaned compiler tree while it
    lives, or the half-built dir after."""
    import signal

    from proc_helpers import wait_for

    py = release_python(version)
    env = build_env(py.parent.parent, tmp_path)
    env["FLASHINFER_CUDA_ARCH_LIST"] = "9.0a"
    script = tmp_path / "server.py"
    script.write_text(KILLED_BUILD)
    import subprocess

    server = procs.start([str(py), str(script)], env=env, stdout=subprocess.PIPE)
    name = server.stdout.readline().decode().strip()
    assert name.startswith("single_decode_with_kv_cache"), name
    procs.find("cicc", timeout=120)
    os.kill(server.pid, signal.SIGKILL)
    server.wait(10)
    mdir = str(tmp_path / ".cache" / "flashinfer" / version / "90a" / "cached_ops" / name)
    wait_for(lambda: os.path.isdir(mdir), what="the module dir")
    d = run_cli(["diagnose", "--python", str(py), "--json"], env=env)
    assert "Traceback" not in d.stderr
    diag = json.loads(d.stdout)
    hits = [f for f in diag["findings"]
            if f["id"] in ("build-process-stuck", "cache-incomplete-module", "jit-log-unfinished",
                           "build-killed")
            and (name in f["subject"] or name in json.dumps(f.get("data", {})))]
    assert hits, diag["findings"]
    assert not os.path.exists(os.path.join(mdir, name + ".so")) or any(
        f["id"] == "build-process-stuck" for f in hits)
