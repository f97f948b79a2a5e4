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


def _commands(yaml_text: str):
    return [json.loads(re.sub(r"([\w./-]+)", r'"\1"', m.group(1)).replace('""', '"'))
            for m in re.finditer(r"command: (\[[^\]]*\])", yaml_text)]


def test_kubernetes_startup_probe_is_readmes_and_the_daemonset_writes_a_textfile(
        tmp_path, built_so):
    pod = (CONTRIB / "kubernetes" / "sglang-with-fidoctor.yaml").read_text()
    readme = (ROOT / "README.md").read_text()
    probe = "exec: {command: [fidoctor, watch, --pid, auto, --once]}"
    assert probe in readme and pod.count(probe) == 2  # startup and liveness, README's form
    warm = [c for c in _commands(pod) if c[:2] == ["fidoctor", "warmup"]]
    assert warm and "--once" in warm[0]
    r = run_cli(["warmup", "--help"])
    assert "--once" in r.stdout and "--python" in r.stdout
    ds = (CONTRIB / "kubernetes" / "fidoctor-daemonset.yaml").read_text()
    line = next(ln.strip() for ln in ds.splitlines() if "fidoctor diagnose" in ln)
    argv = line.split(">")[0].split()
    box = _box(tmp_path, built_so, "ds", True)
    r = subprocess.run([FIDOCTOR, *argv[1:]], env=box.env(), capture_output=True, text=True,
                       timeout=60)
    assert 'fidoctor_finding{id="cache-incomplete-module",severity="error"} 1' in r.stdout
