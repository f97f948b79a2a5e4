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


def _textfile_runs(tmp_path, built_so):
    """(README's prom lines, the DaemonSet's loop body), each as sh text whose textfile dir is
    ``tmp_path/textfile``, and the env of a broken node (a truncated module) with the real CLI
    first on PATH."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(fidoctor diagnose --level quick --format slurm.*?)```",
                      readme, re.S).group(1)
    prom = "\n".join(block.splitlines()[1:-1])  # between the slurm and the npd lines
    assert "--format prom" in prom
    ds = (CONTRIB / "kubernetes" / "fidoctor-daemonset.yaml").read_text()
    body = re.search(r"while true; do\n(.*?)\n\s*sleep 300", ds, re.S).group(1)
    out = tmp_path / "textfile"
    out.mkdir()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "fidoctor").symlink_to(FIDOCTOR)
    env = _box(tmp_path, built_so, "node", True).env(PATH=f"{bindir}:/usr/bin:/bin")
    return (prom.replace("/var/lib/node_exporter", str(out)),
            body.replace("/textfile", str(out))), out, bindir, env


def test_the_prom_textfile_recipes_publish_a_node_with_problems(tmp_path, built_so):
    """README's prom lines and the DaemonSet's loop, run by a real shell on a node with a
    truncated module: the textfile must say so. Before: README's ``> tmp && mv`` skipped the
    mv whenever fidoctor exited 1 (a problem found: the very case to publish), leaving a
    stale healthy file and a ``fidoctor.prom.PID`` behind at every run."""
    runs, out, _, env = _textfile_runs(tmp_path, built_so)
    for sh in runs:
        for f in out.iterdir():
            f.unlink()
        r = subprocess.run(["sh", "-c", sh], env=env, capture_output=True, text=True,
                           timeout=120)
        assert sorted(p.name for p in out.iterdir()) == ["fidoctor.prom"], (sh, r.stderr)
        text = (out / "fidoctor.prom").read_text()
        assert 'fidoctor_finding{id="cache-incomplete-module",severity="error"} 1' in text


def test_the_prom_textfile_recipes_keep_the_last_file_when_fidoctor_fails(tmp_path, built_so):
    """A run that prints nothing (fidoctor could not run: a bad flag, killed at the memory
    limit) must not replace the last good textfile with an empty one, nor leave its temp
    file: the last run's timestamp metric then shows how stale it is. Before: the DaemonSet
    moved whatever came out (an empty file) over it."""
    runs, out, bindir, env = _textfile_runs(tmp_path, built_so)
    good = "fidoctor_exit_code{level=\"quick\"} 0\n"
    (bindir / "fidoctor").unlink()
    (bindir / "fidoctor").write_text("#!/bin/sh\necho 'fidoctor: error: boom' >&2\nexit 2\n")
    (bindir / "fidoctor").chmod(0o755)
    for sh in runs:
        (out / "fidoctor.prom").write_text(good)
        subprocess.run(["sh", "-c", sh], env=env, capture_output=True, text=True, timeout=60)
        assert sorted(p.name for p in out.iterdir()) == ["fidoctor.prom"], sh
        assert (out / "fidoctor.prom").read_text() == good, sh


def test_slurm_health_check_never_drains_for_fidoctors_own_failure(tmp_path, built_so):
    """The script as printed, run by a real ``sh`` with fidoctor.env pointing at a fidoctor
    that is missing, hangs, crashes, or prints garbage. Stand-ins: the failing fidoctors are
    small scripts (a broken install's real Python traceback, a real ``sleep``), and
    ``scontrol`` is a recorder (the drain itself is checked on a real slurmd above). Before:
    any exit 1 drained the node with whatever was printed: a traceback (a broken venv's
    ImportError) drained it with an empty Reason, two lines of garbage with a two-line one;
    a hang or a missing fidoctor passed the node silently. Now only exactly one
    ``Reason=fidoctor: …`` line with exit 1 drains; the rest exit 0 and say "not checked"."""
    script = _script(tmp_path)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    calls = tmp_path / "scontrol.calls"
    (bindir / "scontrol").write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    fakes = {
        "crash": f"#!{sys.executable}\nimport fidoctor_not_installed_here\n",
        "garbage": "#!/bin/sh\necho 'Reason=fidoctor: x'\necho garbage\nexit 1\n",
        "stray": "#!/bin/sh\necho 'Warning: something else'\nexit 1\n",
        "hang": "#!/bin/sh\nexec sleep 60\n",
    }
    for name, text in fakes.items():
        (bindir / name).write_text(text)
    for p in bindir.iterdir():
        p.chmod(0o755)
    env = {"PATH": f"{bindir}:{os.environ['PATH']}", "SLURMD_NODENAME": "n1"}
    for name in (*fakes, "missing"):
        (script.parent / "fidoctor.env").write_text(
            f"FIDOCTOR={bindir / name}\nFIDOCTOR_TIMEOUT=2\n")
        r = subprocess.run(["sh", str(script)], capture_output=True, text=True, timeout=60,
                           env=env)
        assert r.returncode == 0 and not calls.exists(), (name, r)
        assert "n1 not checked (" in r.stderr and "left alone" in r.stderr, (name, r.stderr)
    # the one shape that drains, from the real CLI: still drains
    box = _box(tmp_path, built_so, "bad", True)
    _env_file(script.parent / "fidoctor.env", box)
    r = subprocess.run(["sh", str(script)], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 1 and r.stdout == "Reason=fidoctor: cache-incomplete-module\n"
    assert calls.read_text() == \
        "update NodeName=n1 State=DRAIN Reason=fidoctor: cache-incomplete-module\n"


def test_slurm_health_check_passes_shellcheck():
    from test_health import _apt_tool

    exe = _apt_tool("shellcheck", "shellcheck")
    if not exe:
        pytest.skip("shellcheck is not installable here")
    r = subprocess.run([exe, "-s", "sh", str(CONTRIB / "slurm" / "fidoctor-healthcheck.sh")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout


def test_the_prom_textfile_recipes_never_publish_a_file_cut_short(tmp_path, built_so):
    """The textfile dir on a real tmpfs with 8 KiB left, a node whose textfile is bigger
    (100 unfinished builds). Before: fidoctor's write hit ENOSPC after 4 KiB and said nothing
    (click.echo swallowed it; exit 1, the verdict), and README's line and the DaemonSet moved
    the 4 KiB stub over the last good file (node-exporter then rejects the cut line: all of
    the node's fidoctor metrics gone). Now fidoctor says so (exit 2) and the recipes keep the
    last file: a textfile is published only when its last line is the timestamp."""
    from conftest import FA2, log_line
    from fs_helpers import fill, tmpfs

    runs, out, _, env = _textfile_runs(tmp_path, built_so)
    box = Box(Path(env["FLASHINFER_WORKSPACE_BASE"]), built_so)
    ws = box.workspace()
    for i in range(100):
        name = f"{FA2}_{i}"
        box.module(ws, name, so="missing", objects=1)
        box.log(ws, [log_line("new", "building", name, time.time() - 60)])
    good = "fidoctor_exit_code{level=\"quick\"} 0\n"
    with tmpfs(out, size="1m"):
        for sh in runs:
            for f in out.iterdir():
                f.unlink()
            (out / "fidoctor.prom").write_text(good)
            fill(out, 8192)
            r = subprocess.run(["sh", "-c", sh], env=env, capture_output=True, text=True,
                               timeout=120)
            (out / "filler").unlink()
            assert sorted(p.name for p in out.iterdir()) == ["fidoctor.prom"], (sh, r.stderr)
            assert (out / "fidoctor.prom").read_text() == good, sh
            assert "could not be written whole" in r.stderr, (sh, r)
