"""Torch-extension batons (TORCH_EXTENSIONS_DIR) judged like FlashInfer's own (issue 18, item 5).

With FlashInfer 0.4.x, ``import flashinfer`` makes apache-tvm-ffi compile its ``c_dlpack``
torch extension under torch's extensions dir, guarded by a torch FileBaton; a kill there
leaves the baton and every later import spins on it forever. Real parts: the real CPU torch
of the shared target venv (``torch.utils.file_baton.FileBaton``: the builder's
``try_acquire`` really creates the baton, a real SIGKILL really leaves it, the waiter's
``wait()`` really spins), and the real CLI. Stand-in: the extension's build itself (a
sleeping builder that holds the baton, as cpp_extension.load does while it compiles): no
CUDA torch here to compile c_dlpack.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from conftest import run_cli
from proc_helpers import wait_for
from warmup_helpers import target_venv

pytestmark = pytest.mark.timeout(120)

BUILDER = """
import sys, time
from torch.utils.file_baton import FileBaton
b = FileBaton(sys.argv[1])
assert b.try_acquire()
print("acquired", flush=True)
time.sleep(600)  # "compiling"
"""
WAITER = """
import sys
from torch.utils.file_baton import FileBaton
print("waiting", flush=True)
FileBaton(sys.argv[1]).wait()
"""


def _env(tmp_path):
    env = dict(os.environ)
    env["TORCH_EXTENSIONS_DIR"] = str(tmp_path / "torch_extensions")
    env["FLASHINFER_WORKSPACE_BASE"] = str(tmp_path / "base")
    env["NO_COLOR"] = "1"
    return env


def _start(procs, body, *args, env):
    path = procs.tmp / f"s{len(procs.popens)}.py"
    path.write_text(body)
    import subprocess

    return procs.start([target_venv(), str(path), *map(str, args)], env=env,
                       stdout=subprocess.PIPE)


def _lock_findings(env):
    r = run_cli(["diagnose", "--json"], env=env)
    assert r.returncode in (0, 1), r.stderr
    assert "Traceback" not in r.stderr
    return [f for f in json.loads(r.stdout)["findings"] if f["id"] == "build-lock-held"]


def test_a_killed_extension_build_leaves_a_stale_baton_and_its_waiter_is_named(tmp_path, procs):
    env = _env(tmp_path)
    ext = tmp_path / "torch_extensions" / "py311_cpu" / "c_dlpack"
    ext.mkdir(parents=True)
    baton = ext / "lock"
    builder = _start(procs, BUILDER, baton, env=env)
    assert builder.stdout.readline().strip() == b"acquired"
    os.kill(builder.pid, signal.SIGKILL)  # a real kill mid-"build"
    builder.wait(10)
    assert baton.exists(), "torch's baton outlives its killed holder"
    waiter = _start(procs, WAITER, baton, env=env)
    assert waiter.stdout.readline().strip() == b"waiting"
    time.sleep(0.5)
    assert waiter.poll() is None, "the real FileBaton.wait() spins"
    [f] = _lock_findings(env)
    assert f["severity"] == "error" and "stale" in f["title"]
    assert "torch extension c_dlpack" in f["title"]
    assert f["data"]["extension"] == "c_dlpack" and f["data"]["lock_path"] == str(baton)
    assert f["data"]["waiter_pids"] == [waiter.pid]
    [fix] = f["fixes"]
    assert fix["id"] == "" and fix["commands"] == [f"rm -f {baton}"], "advice: not our cache"


def test_a_live_extension_build_holding_its_baton_is_not_stale(tmp_path, procs):
    env = _env(tmp_path)
    ext = tmp_path / "torch_extensions" / "c_dlpack"
    ext.mkdir(parents=True)
    baton = ext / "lock"
    builder = _start(procs, BUILDER, baton, env=env)
    assert builder.stdout.readline().strip() == b"acquired"
    wait_for(lambda: baton.exists(), what="the baton")
    found = _lock_findings(env)
    assert all("stale" not in f["title"] for f in found), found
    assert all(f["data"]["holder_pids"] == [builder.pid] for f in found)


def test_the_advised_removal_frees_the_real_waiter_and_fix_leaves_it_alone(tmp_path, procs):
    """fidoctor fix never touches torch's extensions dir (not FlashInfer's cache); the
    advised command, run by hand, really frees the real FileBaton waiter."""
    import subprocess

    env = _env(tmp_path)
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    ext = tmp_path / "torch_extensions" / "py311_cpu" / "c_dlpack"
    ext.mkdir(parents=True)
    baton = ext / "lock"
    builder = _start(procs, BUILDER, baton, env=env)
    assert builder.stdout.readline().strip() == b"acquired"
    os.kill(builder.pid, signal.SIGKILL)
    builder.wait(10)
    waiter = _start(procs, WAITER, baton, env=env)
    assert waiter.stdout.readline().strip() == b"waiting"
    r = run_cli(["fix", "--yes", "--only", "build-lock-held", "--json"], env=env, timeout=120)
    assert "Traceback" not in r.stderr, r.stderr
    assert baton.exists() and json.loads(r.stdout)["plan"] == []
    [f] = _lock_findings(env)
    subprocess.run(f["fixes"][0]["commands"][0], shell=True, check=True)
    assert waiter.wait(10) == 0, "the real FileBaton.wait() returned"
