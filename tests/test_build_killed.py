"""build-killed: a real nvcc build of a real FlashInfer module OOM-killed in a real memory cgroup.

The "server" is a Python process that moves itself into a child memory cgroup
of the test's own (v2 ``memory.max`` where the v2 controller is on, else v1
``memory.limit_in_bytes``; here v1; tests/memcg_helpers.py), pages the toolchain in
first (so only the compilers' data is charged to the cgroup), then runs ninja on a module
FlashInfer 0.7.2.post1 wrote, as FlashInfer's ``run_ninja`` does, with the real nvcc 13.0.
At 200 MB cudafe++/cc1plus die to the kernel's OOM killer (~20 s). The server
stays up so fidoctor reads its cgroup through ``--pid``.
"""

from __future__ import annotations

import os
import sys

from memcg_helpers import CUDA_HOME, server_ended
from ninja_helpers import fi_env, flashinfer_module

from fidoctor.diagnosis import diagnose
from fidoctor.snapshot.context import build_context
from fidoctor.snapshot.runner import gather_snapshot


def _server(procs, memcg, env, mode, mod):
    return server_ended(procs, memcg, env, mode, mod)


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
