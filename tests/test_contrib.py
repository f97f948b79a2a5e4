"""contrib/: the Slurm health check on a real slurmctld + slurmd, the node-problem-detector
plugin's command and exit codes, the Kubernetes examples' commands.

node-problem-detector and Kubernetes are not on this machine (no Debian package of NPD, no
cluster): their configs are checked for the command they run, which is run for real here,
and the startup probe is checked to be README's (the `watch` form), not a second one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import DECODE, FA3, Box, run_cli

ROOT = Path(__file__).resolve().parent.parent
CONTRIB = ROOT / "contrib"
FIDOCTOR = os.path.join(os.path.dirname(sys.executable), "fidoctor")


def _box(tmp_path, built_so, name, broken):
    (tmp_path / name).mkdir()
    box = Box(tmp_path / name, built_so)
    ws = box.workspace()
    box.module(ws, DECODE)
    box.module(ws, FA3, so="truncated" if broken else "good")
    return box


def _env_file(dest: Path, box, **more) -> None:
    env = box.env()
    keep = {k: env[k] for k in ("FLASHINFER_WORKSPACE_BASE", "CUDA_HOME",
                                "FLASHINFER_EXTRA_LDFLAGS")}
    keep.update(FIDOCTOR=FIDOCTOR, **more)
    dest.write_text("".join(f"{k}={v}\n" for k, v in keep.items()))


def _script(tmp_path) -> Path:
    d = tmp_path / "sbin"
    d.mkdir()
    shutil.copy(CONTRIB / "slurm" / "fidoctor-healthcheck.sh", d)
    return d / "fidoctor-healthcheck.sh"


def test_slurm_health_check_leaves_a_healthy_node_alone(tmp_path, built_so):
    script = _script(tmp_path)
    _env_file(script.parent / "fidoctor.env", _box(tmp_path, built_so, "ok", False))
    r = subprocess.run([str(script)], capture_output=True, text=True, timeout=60,
                       env={"PATH": os.environ["PATH"], "SLURMD_NODENAME": "nowhere"})
    assert (r.returncode, r.stdout) == (0, ""), r.stderr


def test_slurm_health_check_drains_a_real_node_with_the_reason(tmp_path, built_so, procs):
    from fleet_helpers import SlurmCluster, can_unshare_uts, ensure_slurm

    why = can_unshare_uts() or ensure_slurm()
    if why:
        pytest.skip(why)
    script = _script(tmp_path)
    cluster = SlurmCluster(tmp_path / "slurm", procs, extra=[
        f"HealthCheckProgram={script}", "HealthCheckInterval=5", "HealthCheckNodeState=ANY"])
    _env_file(script.parent / "fidoctor.env", _box(tmp_path, built_so, "bad", True),
              SLURM_CONF=str(cluster.conf))
    deadline, state = time.monotonic() + 90, ""
    while time.monotonic() < deadline:
        state = subprocess.run(["sinfo", "-h", "-N", "-o", "%T|%E"], env=cluster.env,
                               capture_output=True, text=True, timeout=30).stdout.strip()
        if state.startswith("drain"):
            break
        time.sleep(1)
    st, reason = state.split("|", 1)
    assert st.startswith("drain"), state
    assert reason == "fidoctor: cache-incomplete-module" and len(reason) <= 64


def test_npd_plugin_command_and_exit_codes(tmp_path, built_so):
    cfg = json.loads((CONTRIB / "node-problem-detector" / "fidoctor-plugin-monitor.json")
                     .read_text())
    assert cfg["plugin"] == "custom"
    [rule] = cfg["rules"]
    assert rule["path"].endswith("/fidoctor") and rule["condition"] == cfg["conditions"][0]["type"]
    limit = cfg["pluginConfig"]["max_output_length"]
    for broken, code in ((True, 1), (False, 0)):
        box = _box(tmp_path, built_so, f"npd{int(broken)}", broken)
        r = subprocess.run([FIDOCTOR, *rule["args"]], env=box.env(), capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == code and 0 < len(r.stdout.strip()) <= limit, r.stdout


def test_kubernetes_startup_probe_is_readmes_and_the_daemonset_writes_a_textfile(
        tmp_path, built_so):
    pod = (CONTRIB / "kubernetes" / "sglang-with-fidoctor.yaml").read_text()
    readme = (ROOT / "README.md").read_text()
    probe = "exec: {command: [fidoctor, watch, --pid, auto, --once]}"
    assert probe in readme and pod.count(probe) == 2  # startup and liveness, README's form
    init = re.search(r"command: \[sh, -c, '(fidoctor warmup [^']*)'\]", pod)
    assert init and "--once" in init.group(1)
    r = run_cli(["warmup", "--help"])
    assert "--once" in r.stdout and "--python" in r.stdout
    ds = (CONTRIB / "kubernetes" / "fidoctor-daemonset.yaml").read_text()
    line = next(ln.strip() for ln in ds.splitlines() if "fidoctor diagnose" in ln)
    argv = line.split(">")[0].split()
    box = _box(tmp_path, built_so, "ds", True)
    r = subprocess.run([FIDOCTOR, *argv[1:]], env=box.env(), capture_output=True, text=True,
                       timeout=60)
    assert 'fidoctor_finding{id="cache-incomplete-module",severity="error"} 1' in r.stdout


def test_kubernetes_init_warmup_never_keeps_the_pod_from_starting(tmp_path):
    """The pod's initContainer command, run as printed by a real shell with the real CLI on
    PATH and the real serving venv (CPU torch + FlashInfer 0.7.2.post1) for /opt/venv, where
    warmup cannot build (no GPU here, exit 2; a module that fails to compile is exit 1): it
    exits 0, saying so, so the server starts (README's entrypoint does the same). Before:
    ``[fidoctor, warmup, …]`` exited 2 and Kubernetes would keep the pod in
    Init:CrashLoopBackOff, rerunning the warmup forever. Each container that runs FlashInfer
    asks for a GPU (without one warmup cannot tell what to build)."""
    pod = (CONTRIB / "kubernetes" / "sglang-with-fidoctor.yaml").read_text()
    init = re.search(r"command: \[sh, -c, '(fidoctor warmup [^']*)'\]", pod)
    assert init, "the initContainer's warmup runs under sh -c with a fallback"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "fidoctor").symlink_to(FIDOCTOR)
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "HOME": str(tmp_path),
           "FLASHINFER_WORKSPACE_BASE": str(tmp_path / "cache")}
    from warmup_helpers import target_venv

    cmd = init.group(1).replace("/cache/", f"{tmp_path}/cache/")
    cmd = cmd.replace("/opt/venv/bin/python", str(target_venv()))
    r = subprocess.run(["sh", "-c", cmd], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "fidoctor: error: cannot warm up" in r.stderr and "--arch" in r.stderr
    assert "not all kernels are ready" in r.stderr
    assert pod.count("limits: {nvidia.com/gpu: 1}") == 2
