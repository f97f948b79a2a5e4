"""build-killed: a real nvcc build of a real FlashInfer module OOM-killed in a real memory cgroup.

The "server" is a Python process that moves itself into a child memory cgroup
of the test's own (v2 ``memory.max`` where the v2 controller is on, else v1
``memory.limit_in_bytes``; here v1), then runs ninja on a module FlashInfer
0.7.2.post1 wrote, as FlashInfer's ``run_ninja`` does, with the real nvcc 13.0.
At 200 MB cudafe++/cc1plus die to the kernel's OOM killer (~20 s). The server
stays up so fidoctor reads its cgroup through ``--pid``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from ninja_helpers import fi_env, flashinfer_module, venv_ninja

from fidoctor.diagnosis import diagnose
from fidoctor.snapshot.context import build_context
from fidoctor.snapshot.runner import gather_snapshot

CUDA_HOME = "/usr/local/cuda"

SERVER = r"""
import os, subprocess, sys, tempfile, time
if sys.argv[3] == "build":
    # Page the toolchain in (nvcc, cudafe++, cicc, ptxas, cc1plus, as, ld) before joining the
    # cgroup: page cache is charged to the cgroup that first reads it, and with the compilers'
    # own code charged to a 200 MB cgroup the kernel reclaims and refaults it forever instead
    # of OOM-killing (failcnt climbs, oom_kill stays 0: seen after `drop_caches`).
    with tempfile.TemporaryDirectory() as t:
        with open(os.path.join(t, "w.cu"), "w") as f:
            f.write("__global__ void k(float *x) { x[0] = 1; }\n")
        subprocess.run([os.path.join(sys.argv[5], "bin", "nvcc"), "-c", "w.cu", "-o", "w.o",
                        "-gencode=arch=compute_90a,code=sm_90a"], cwd=t, capture_output=True,
                       timeout=240)
with open(os.path.join(sys.argv[1], "cgroup.procs"), "w") as f:
    f.write(str(os.getpid()))
if sys.argv[3] == "build":
    try:
        r = subprocess.run([sys.argv[2], "-C", sys.argv[4]], capture_output=True, text=True,
                           timeout=240)
        print("ended", r.returncode, r.stdout[-300:].replace("\n", " "), flush=True)
    except subprocess.TimeoutExpired:
        print("ended timeout: no OOM kill in 240 s", flush=True)
else:
    print("ended idle", flush=True)
time.sleep(600)
"""


def _own_memcg() -> Path:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        hid, ctrl, path = line.split(":", 2)
        if hid == "0" and Path("/sys/fs/cgroup", path.lstrip("/"), "memory.max").exists():
            return Path("/sys/fs/cgroup", path.lstrip("/"))
        if "memory" in ctrl.split(","):
            d = Path("/sys/fs/cgroup/memory", path.lstrip("/"))
            if d.is_dir():
                return d
    pytest.skip("no memory cgroup controller (v1 or v2) on this machine")


@pytest.fixture
def memcg(procs):
    d = _own_memcg() / f"fidoctor-test-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    limit = next((d / n for n in ("memory.max", "memory.limit_in_bytes") if (d / n).exists()),
                 None)
    if limit is None:
        d.rmdir()
        pytest.skip(f"the memory controller is not delegated to {d.parent} (cgroup v2 "
                    "subtree_control), so no child memory limit can be set")
    limit.write_text("200M")
    try:
        yield d
    finally:
        procs.kill_all()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                d.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def _server(procs, memcg, env, mode, mod):
    p = procs.start([sys.executable, "-c", SERVER, str(memcg), venv_ninja(), mode, str(mod),
                     CUDA_HOME], env=env, stdout=subprocess.PIPE)
    line = p.stdout.readline().decode()
    assert line.startswith("ended"), line
    return p, line


def by_id(diag, id_):
    return [f for f in diag.findings if f.id == id_]


def test_oom_killed_build_is_the_cause_of_the_half_built_module(tmp_path, memcg, procs):
    base = tmp_path / "b"
    mod = flashinfer_module(base, build=False, launch=False)
    env = fi_env(base, CUDA_HOME)
    p, line = _server(procs, memcg, env, "build", mod)
    assert "ended 1" in line, line
    diag = diagnose(gather_snapshot(build_context(pid=p.pid)))
    [f] = by_id(diag, "build-killed")
    assert f.severity == "error" and f.data["oom_kill"] >= 1
    assert f.data["affects"] == [mod.name]
    assert any("oom_kill" in e and memcg.name in e for e in f.evidence), f.evidence
    kern = diag.snapshot.data("oom")["kernel"]
    if kern["status"] == "ok":
        assert f.data["kills"] and f.data["kills"][0]["task"] in ("cudafe++", "cc1plus", "cicc")
        assert any("Killed process" in e for e in f.evidence)
    # 200 MB cannot hold one decode job: fewer jobs cannot help, so set-max-jobs is not offered
    assert f.data["max_jobs"] is None
    assert not [x for x in f.fixes if x.id == "set-max-jobs"]
    assert any("raise the server's memory limit" in x.description for x in f.fixes)
    [sym] = by_id(diag, "cache-incomplete-module")
    assert sym.caused_by == "build-killed"
    # The same real snapshot, its cgroup limit read as 1 GiB (a replayed edit, not a new
    # kill): one decode job fits, ninja's default -j does not, so set-max-jobs is offered.
    snap = diag.snapshot
    snap.sections["oom"].data["cgroup"]["limit"] = 1 << 30
    [g] = by_id(diagnose(snap), "build-killed")
    assert g.data["max_jobs"] == 1 and g.fixes[0].id == "set-max-jobs"
    from fidoctor.fixes import FixContext, all_fixes

    plan = all_fixes()["set-max-jobs"].plan(g, FixContext(txid="t", state=str(tmp_path),
                                                          env={}, python=sys.executable))
    assert plan.env == {"MAX_JOBS": "1"} and plan.safety == "safe"


def test_same_cgroup_without_kills_is_quiet(tmp_path, memcg, procs):
    base = tmp_path / "b"
    flashinfer_module(base)  # built (launcher compiles), nothing killed
    p, _ = _server(procs, memcg, fi_env(base, CUDA_HOME), "idle", base)
    diag = diagnose(gather_snapshot(build_context(pid=p.pid)))
    assert not by_id(diag, "build-killed")
    cg = diag.snapshot.data("oom")["cgroup"]
    assert cg["path"].endswith(memcg.name) and cg["limit"] == 200 << 20
    assert os.path.basename(cg["dir"]) == memcg.name
