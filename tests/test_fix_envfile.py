"""The env file process-scoped fixes write: real bash sources it; fixes stack; undo unstacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fidoctor.fixes import FixContext, NotApplicable, set_max_jobs
from fidoctor.fixes._envfile import apply_env, env_path, env_step
from fidoctor.model import Finding
from fidoctor.txn import apply_steps, undo

pytestmark = pytest.mark.timeout(60)


def sourced(path, var, env):
    r = subprocess.run(["bash", "-c", f'. "{path}" && printf %s "${var}"'], env=env,
                       capture_output=True, text=True, timeout=30, check=True)
    return r.stdout


def test_env_lines_prepend_and_match_what_the_proof_assumes(tmp_path):
    state = str(tmp_path / "state")
    step, lines = env_step(state, {"LD_PRELOAD": "/opt/cuda/lib64/libcudart.so.12",
                                   "MAX_JOBS": "4"})
    apply_steps(state, [step], {})
    path = env_path(state)
    base = {"PATH": "/usr/bin:/bin", "LD_PRELOAD": "/usr/lib/libjemalloc.so"}
    for var in ("LD_PRELOAD", "MAX_JOBS"):
        assert sourced(path, var, base) == apply_env(base, {
            "LD_PRELOAD": "/opt/cuda/lib64/libcudart.so.12", "MAX_JOBS": "4"})[var]
    assert sourced(path, "LD_PRELOAD", {"PATH": "/usr/bin:/bin"}) == \
        "/opt/cuda/lib64/libcudart.so.12"
    assert all(line in Path(path).read_text() for line in lines)


def test_second_fix_keeps_first_lines_and_undo_unstacks_byte_for_byte(tmp_path):
    state = str(tmp_path / "state")
    path = env_path(state)
    s1, _ = env_step(state, {"LD_PRELOAD": "/a/libcudart.so.12"})
    apply_steps(state, [s1], {})
    with open(path, "a") as f:
        f.write("export MY_OWN=1  # a line the user added\n")
    first = Path(path).read_bytes()
    s2, _ = env_step(state, {"MAX_JOBS": "2"})
    assert s2.old_sha is not None  # a replace with backup, not a blind write
    apply_steps(state, [s2], {})
    text = Path(path).read_text()
    assert "MY_OWN=1" in text and "/a/libcudart.so.12" in text and "MAX_JOBS=2" in text
    undo(state)
    assert Path(path).read_bytes() == first
    # The first fix's file was edited by the user since: undo leaves it, says so.
    res = undo(state)
    assert res.left and "changed since the fix" in res.left[0]
    assert Path(path).read_bytes() == first


def test_set_max_jobs_plan_and_refusal(tmp_path):
    ctx = FixContext(txid="t", state=str(tmp_path), env={}, python=sys.executable)
    f = Finding(id="build-memory-pressure", severity="warning", title="t", subject="host",
                data={"max_jobs": 3})
    plan = set_max_jobs.plan(f, ctx)
    assert plan.env == {"MAX_JOBS": "3"} and plan.safety == "safe" and not plan.steps
    with pytest.raises(NotApplicable):
        set_max_jobs.plan(Finding(id="build-memory-pressure", severity="warning", title="t",
                                  data={}), ctx)
