"""The issue's "done when": fix the seed-like box, diagnose with the env it prescribes, undo.

The box is tests/cudart_helpers.Seed: a real venv with NVIDIA's real
nvidia-cuda-runtime-cu12 12.4.127 wheel, a stand-in torch whose gcc-built
libtorch_cuda.so has the cu124 wheels' RPATH, a toolkit dir with the real
12.9.79 libcudart (its nvcc is a banner script: no CUDA 12 nvcc can be
installed here), gcc-built modules linked against it — plus a truncated
module .so. The dynamic loader is asked for real whether the module loads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from cudart_helpers import BYVERSION_MOD, Seed, real_load
from fix_helpers import cli, tree_hashes

from fidoctor.fixes import FixContext, NotApplicable, preload_cudart, replace_pip_cudart
from fidoctor.model import Finding

pytestmark = pytest.mark.timeout(300)
TARGET_IDS = {"cudart-missing-symbol", "cuda-version-skew", "cache-incomplete-module"}
# Written by diagnose itself (ELF fact cache) or by Python imports: not part of the box.
NOT_BOX = ("fidoctor-cache", "state", "__pycache__")


def box_hashes(root):
    return {k: v for k, v in tree_hashes(root).items()
            if not any(part in NOT_BOX for part in k.split(os.sep))}


@pytest.fixture
def seed(tmp_path):
    s = Seed(tmp_path / "seed")
    d = s.base / ".cache" / "flashinfer" / "90" / "cached_ops" / "single_decode_broken"
    d.mkdir(parents=True)
    (d / "build.ninja").write_text("ninja_required_version = 1.3\nname = single_decode_broken\n"
                                   "build k.cuda.o: cuda_compile k.cu\n")
    (d / "single_decode_broken.so").write_bytes(b"\x7fELF\x02\x01\x01" + bytes(20))
    s.state = tmp_path / "seed" / "state"
    return s


def ids_under(env, python, source=None):
    """Finding ids of `fidoctor diagnose`, optionally after sourcing ``source`` in bash."""
    cmd = f'exec "{sys.executable}" -m fidoctor diagnose --json --python "{python}"'
    if source:
        cmd = f'. "{source}" && {cmd}'
    r = subprocess.run(["bash", "-c", cmd], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode in (0, 1), r.stderr
    return {f["id"] for f in json.loads(r.stdout)["findings"]}


def sourced_env(env, source):
    r = subprocess.run(["bash", "-c", f'. "{source}" && env -0'], env=env, capture_output=True,
                       timeout=30)
    return dict(kv.split("=", 1) for kv in r.stdout.decode().split("\0") if "=" in kv)


def test_done_when_seed_box_fixed_by_env_file_and_undone_byte_for_byte(seed):
    env = seed.env(XDG_STATE_HOME=str(seed.state))
    py = str(seed.v["python"])
    module = seed.modules[BYVERSION_MOD]
    before = box_hashes(seed.root)
    assert ids_under(env, py) >= TARGET_IDS
    assert real_load(seed.v["python"], module, env)["ok"] is False  # the seed's failure

    r = cli(["fix", "--yes", "--python", py, "--no-warmup"], env, timeout=200)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "preload-cudart (safe)" in r.stdout and "quarantine-module (safe)" in r.stdout
    env_file = seed.state / "fidoctor" / "env.sh"
    assert f"Start the server with this environment:  . {env_file}" in r.stdout
    prov = str(seed.toolkit / "lib64" / "libcudart.so.12")
    assert f"export LD_PRELOAD={prov}" in r.stdout and f"export LD_PRELOAD={prov}" in \
        env_file.read_text()
    assert seed.v["pip_cudart"].read_bytes() != (seed.toolkit / "lib64" /
                                                 "libcudart.so.12").read_bytes()

    assert not TARGET_IDS & ids_under(env, py, source=env_file)
    fixed_env = sourced_env(env, env_file)
    loaded = real_load(seed.v["python"], module, fixed_env)
    assert loaded["ok"] is True, loaded  # the real loader agrees
    assert os.path.realpath(prov) in loaded["mapped"], loaded

    u = cli(["undo"], env)
    assert u.returncode == 0, u.stdout + u.stderr
    assert not env_file.exists()
    assert box_hashes(seed.root) == before
    assert ids_under(env, py) >= TARGET_IDS


def test_replace_pip_cudart_only_when_asked_warns_and_undoes(seed):
    env = seed.env(XDG_STATE_HOME=str(seed.state))
    py = str(seed.v["python"])
    pip = seed.v["pip_cudart"]
    before = box_hashes(seed.root)
    args = ["fix", "--yes", "--python", py, "--no-warmup", "--only", "cudart-missing-symbol",
            "--use", "replace-pip-cudart"]
    r = cli(args, env, timeout=200)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "replace-pip-cudart (risky)" in r.stdout
    assert "pip install --force-reinstall" in r.stdout
    assert pip.read_bytes() == (seed.toolkit / "lib64" / "libcudart.so.12").read_bytes()
    assert "cudart-missing-symbol" not in ids_under(env, py)  # no env needed: the file changed
    assert real_load(seed.v["python"], seed.modules[BYVERSION_MOD], env)["ok"] is True
    u = cli(["undo"], env)
    assert u.returncode == 0, u.stdout + u.stderr
    assert box_hashes(seed.root) == before


def _finding(**data):
    return Finding(id="cudart-missing-symbol", severity="error", title="t", subject="s",
                   data=data)


def test_never_an_older_runtime(seed, tmp_path):
    ctx = FixContext(txid="t", state=str(tmp_path), env={}, python=sys.executable)
    old = str(seed.v["pip_cudart"])  # 12.4.127
    f = _finding(provider_path=old, provider_version="12.4.127", runtime_version="12.9.79",
                 pip_cudart_path=str(seed.toolkit / "lib64" / "libcudart.so.12"),
                 pip_version="12.9.79")
    for mod in (preload_cudart, replace_pip_cudart):
        with pytest.raises(NotApplicable, match="older"):
            mod.plan(f, ctx)
    unknown = _finding(provider_path=old, provider_version=None, runtime_version="12.4.127")
    with pytest.raises(NotApplicable, match="cannot tell"):
        preload_cudart.plan(unknown, ctx)


def test_toolkit_unusable_gets_advice_only(seed, tmp_path):
    env = seed.env(XDG_STATE_HOME=str(seed.state), CUDA_HOME=str(tmp_path / "no-such-cuda"))
    py = str(seed.v["python"])
    before = box_hashes(seed.root)
    r = cli(["fix", "--yes", "--python", py, "--no-warmup", "--only", "cuda-toolkit-unusable"],
            env, timeout=200)
    if "cuda-toolkit-unusable" not in r.stdout:
        pytest.fail("the probe did not fire on a missing CUDA_HOME:\n" + r.stdout + r.stderr)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "cuda-home-advice (advice only" in r.stdout
    assert "export CUDA_HOME=" in r.stdout or "install one" in r.stdout
    assert box_hashes(seed.root) == before
    assert json.loads(cli(["history", "--json"], env).stdout) == []


@pytest.mark.parametrize("point", ["after-step", "before-commit"])
def test_sigkill_after_env_file_written_is_recovered(seed, point):
    """The seed's two steps (move aside, write env.sh) killed mid-fix; undo puts all back."""
    from fix_helpers import kill_and_reap, spawn_paused, wait_paused

    env = seed.env(XDG_STATE_HOME=str(seed.state))
    py = str(seed.v["python"])
    before = box_hashes(seed.root)
    proc = None
    try:
        proc = spawn_paused(["fix", "--yes", "--python", py, "--no-warmup"], env, point)
        wait_paused(proc, seed.state, point)
        os.killpg(proc.pid, 9)
        proc.communicate(timeout=10)
    finally:
        kill_and_reap(proc)
    env_file = seed.state / "fidoctor" / "env.sh"
    assert (point == "before-commit") == env_file.exists()
    u = cli(["undo"], env)
    assert u.returncode == 0, u.stdout + u.stderr
    assert "rolled back interrupted fix" in u.stdout
    assert not env_file.exists()
    assert box_hashes(seed.root) == before
