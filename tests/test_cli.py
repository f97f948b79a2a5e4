"""The CLI's contracts, run as a real child process: exit codes, --json schema,
snapshot/--from, --pid, colour rules, and bad input as one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from importlib import resources

import jsonschema
import pytest
from conftest import DECODE, FA3, log_line, run_cli


def schema():
    return json.loads(resources.files("fidoctor").joinpath("schema/diagnose.schema.json").read_text())


def broken_box(box):
    ws = box.workspace()
    box.module(ws, DECODE)
    box.module(ws, FA3, so="missing", depfiles=2)
    box.log(ws, [log_line("new", "building", FA3, time.time() - 90)])
    return ws


def test_exit_0_on_healthy_and_json_validates(box):
    box.module(box.workspace(), DECODE)
    # The target is named: an unnamed one without FlashInfer beside a cache is
    # target-lacks-flashinfer (tests/test_target_lacks_flashinfer.py).
    r = run_cli(["diagnose", "--json", "--python", sys.executable], env=box.env())
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    jsonschema.validate(out, schema())
    assert out["summary"]["exit_code"] == 0
    assert out["target"]["python"] == sys.executable or out["target"]["usable"]


@pytest.mark.parametrize("args", [["diagnose", "--json", "--python", sys.executable],
                                  ["explain", "--list"], ["history"]])
def test_closed_stdout_is_exit_2_never_a_verdict(box, tmp_path, args):
    """stdout a pipe nobody reads (``| head -1`` once head has gone): click turned the
    EPIPE into exit 1 -- "problems found" on a healthy box -- or Python's flush at exit
    printed an "Exception ignored" traceback and exited 120. Now: exit 2 (the output was
    not delivered), nothing but at most one line on stderr."""
    box.module(box.workspace(), DECODE)
    env = box.env(XDG_STATE_HOME=str(tmp_path / "state"))
    r, w = os.pipe()
    os.close(r)
    try:
        p = subprocess.run([sys.executable, "-m", "fidoctor", *args], stdout=w,
                           stderr=subprocess.PIPE, text=True, env=env, timeout=120)
    finally:
        os.close(w)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr and "Exception ignored" not in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) <= 1, p.stderr


def test_exit_1_on_problems_with_evidence_and_fix_commands(box):
    broken_box(box)
    r = run_cli(["diagnose", "--python", sys.executable], env=box.env())
    assert r.returncode == 1, r.stderr
    assert "WARNING  cache-incomplete-module" in r.stdout
    assert "ERROR  jit-log-unfinished" in r.stdout
    assert "$ fidoctor fix --only cache-incomplete-module" in r.stdout
    assert "\x1b[" not in r.stdout  # not a TTY: no colour
    j = run_cli(["diagnose", "--json", "--python", sys.executable], env=box.env())
    assert j.returncode == 1
    doc = json.loads(j.stdout)
    jsonschema.validate(doc, schema())
    assert {f["id"] for f in doc["findings"]} == {"cache-incomplete-module", "jit-log-unfinished"}


def test_snapshot_then_replay_elsewhere(box, tmp_path):
    broken_box(box)
    snap = tmp_path / "snap.json"
    r = run_cli(["snapshot", "-o", str(snap)], env=box.env())
    assert r.returncode == 0, r.stderr
    live = json.loads(run_cli(["diagnose", "--json"], env=box.env()).stdout)
    shutil.rmtree(box.root)  # the machine state is gone; the snapshot still replays
    env = dict(os.environ, FLASHINFER_WORKSPACE_BASE=str(tmp_path / "elsewhere"))
    replay = run_cli(["diagnose", "--json", "--from", str(snap)], env=env)
    assert replay.returncode == 1
    key = lambda d: [(f["id"], f["subject"], f["severity"]) for f in d["findings"]]  # noqa: E731
    assert key(json.loads(replay.stdout)) == key(live)


@pytest.mark.parametrize("content,needle", [
    (b"", "not a JSON snapshot"),
    (b"\x00\xff garbage", "not a JSON snapshot"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"schema_version": 1}', "not a fidoctor snapshot"),
    (b'{"schema_version": 99, "context": {}, "sections": {}, "taken_at": 0}', "newer than"),
    # a time no clock can show: report's footer raised OverflowError ("internal error")
    (b'{"schema_version": 1, "context": {}, "sections": {}, "taken_at": 1e308}', "taken_at"),
    (b'{"schema_version": 1, "context": {}, "sections": {}, "taken_at": NaN}', "taken_at"),
])
def test_bad_snapshot_is_exit_2_one_line(tmp_path, content, needle):
    p = tmp_path / "s.json"
    p.write_bytes(content)
    for cmd in ("diagnose", "report"):
        r = run_cli([cmd, "--from", str(p)])
        assert r.returncode == 2, (cmd, r.stdout + r.stderr)
        assert needle in r.stderr and "Traceback" not in r.stderr, (cmd, r.stderr)
        assert "internal error" not in r.stderr, (cmd, r.stderr)


@pytest.mark.parametrize("args", [
    ["diagnose", "--log-only", "--log", "-", "--log-timeout"],
    ["fleet", "-", "--timeout"], ["fleet", "-", "--per-node-timeout"],
    ["warmup", "--plan", "--stall-after"], ["warmup", "--plan", "--timeout"],
    ["cache", "verify", "--budget"], ["run", "--stall-after"], ["watch", "--pid", "1",
                                                                "--lock-idle-after"],
])
def test_nan_seconds_are_refused(args):
    """NaN passes every range check (all comparisons are false): ``--log-timeout nan`` on
    stdin died in ValueError ("internal error"), a NaN stall or budget would never end."""
    cmd = args + ["nan"] + (["--", "true"] if args[0] == "run" else [])
    r = run_cli(cmd, timeout=60, input_text="")
    assert r.returncode == 2, (cmd, r.stdout, r.stderr)
    assert "not a number of seconds" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_usage_errors_exit_2(tmp_path):
    assert run_cli(["diagnose", "--bogus"]).returncode == 2
    r = run_cli(["diagnose", "--python", str(tmp_path / "nope")])
    assert r.returncode == 2 and "no such file" in r.stderr and "Traceback" not in r.stderr
    r = run_cli(["diagnose", "--from", str(tmp_path / "missing.json")])
    assert r.returncode == 2 and "cannot read snapshot" in r.stderr


def test_pid_drives_the_environment(box, tmp_path):
    """The server's FLASHINFER_WORKSPACE_BASE, not fidoctor's, decides where to look."""
    broken_box(box)
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                              env=box.env())
    try:
        own_env = dict(os.environ, FLASHINFER_WORKSPACE_BASE=str(tmp_path / "empty"))
        r = run_cli(["diagnose", "--json", "--pid", str(server.pid)], env=own_env)
        doc = json.loads(r.stdout)
        assert doc["target"]["pid"] == server.pid
        # Started from a venv's bin/python (a symlink): the venv's python, not the base binary.
        assert doc["target"]["python"] == sys.executable
        assert doc["target"]["flashinfer_root"] == str(box.root)
        assert "cache-incomplete-module" in {f["id"] for f in doc["findings"]}
    finally:
        server.kill()
        server.wait()
    r = run_cli(["diagnose", "--pid", str(server.pid)])
    assert r.returncode == 2 and "no process with pid" in r.stderr


def test_fifo_log_and_unreadable_cache_do_not_hang_or_crash(box):
    ws = box.workspace()
    box.module(ws, DECODE)
    os.mkfifo(ws / "flashinfer_jit.log")
    r = run_cli(["diagnose", "--json", "--python", sys.executable], env=box.env(), timeout=60)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["gather"]["jitlog"]["status"] == "ok"


@pytest.mark.skipif(shutil.which("setpriv") is None or os.geteuid() != 0,
                    reason="needs root and setpriv to drop to an unprivileged user")
def test_permission_denied_as_unprivileged_user(built_so):
    """Run as 'nobody' so permission checks are real even though the suite runs as root."""
    import tempfile
    from pathlib import Path

    from conftest import Box

    top = Path(tempfile.mkdtemp(prefix="fidoctor-perm-"))  # pytest's tmp is root-only
    try:
        box = Box(top / "base", built_so)
        ws = box.workspace()
        box.module(ws, FA3, so="missing")
        ops = ws / "cached_ops"
        for p in [top, *top.rglob("*")]:
            if p.is_dir():
                os.chmod(p, 0o755)
        os.chmod(ops, 0o700)  # owned by root: nobody cannot list it
        _run_as_nobody(box, top, ops)
    finally:
        shutil.rmtree(top)


def _run_as_nobody(box, home, ops):
    env = box.env(HOME=str(home), PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    from nobody_helpers import nobody_python

    argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
            nobody_python(), "-m", "fidoctor", "diagnose", "--json"]
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert "Traceback" not in r.stderr
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    found = [f for f in doc["findings"] if f["id"] == "cache-unreadable"]
    assert found and any(str(ops) in e and "permission denied" in e for e in found[0]["evidence"])
    assert any("uid 65534" in e for e in found[0]["evidence"])


def test_help_is_instant_and_lists_commands():
    r = run_cli(["--help"])
    assert r.returncode == 0 and "diagnose" in r.stdout and "snapshot" in r.stdout


def test_every_help_page_states_real_ranges_and_seconds_options_refuse_negatives():
    """``--help`` of every command, as a user reads it: no option range reads ``x<=None``
    (click's text for a range with neither bound: warmup's --timeout/--stall-after and
    cache verify's --budget said so); a negative number of seconds is a usage error."""
    import click

    from fidoctor.cli import cli

    def walk(cmd, path):
        yield path
        if isinstance(cmd, click.Group):
            ctx = click.Context(cmd)
            for name in cmd.list_commands(ctx):
                yield from walk(cmd.get_command(ctx, name), [*path, name])

    paths = list(walk(cli, []))
    assert ["cache", "verify"] in paths and ["warmup"] in paths
    for path in paths:
        r = run_cli([*path, "--help"])
        assert r.returncode == 0, (path, r.stderr)
        assert "None]" not in r.stdout and "=None" not in r.stdout, (path, r.stdout)
    r = run_cli(["cache", "verify", "--budget", "-1"])
    assert r.returncode == 2 and "--budget" in r.stderr and "Traceback" not in r.stderr
    r = run_cli(["warmup", "--stall-after", "0", "--list"])
    assert r.returncode == 2 and "--stall-after" in r.stderr
