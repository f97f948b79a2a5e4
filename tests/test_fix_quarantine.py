"""`fidoctor fix` / `undo` / `history` end to end on real boxes, through the real CLI.

Every test runs `python -m fidoctor` as a child process against a real
FlashInfer-layout tree (gcc-built .so files, truncated and text ones) with the
state dir under tmp; crashes are real SIGKILLs of a real fix process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
from conftest import DECODE, FA2
from fix_helpers import (
    cli,
    finding_ids,
    fix_env,
    kill_and_reap,
    spawn_paused,
    tree_hashes,
    wait_paused,
)

ID = "cache-incomplete-module"
pytestmark = pytest.mark.timeout(240)
# --only: the process table is shared with whatever else runs on this machine;
# a test must never act on findings about processes it did not start.
FIX = ["fix", "--yes", "--no-warmup", "--only", ID]


def broken_box(box):
    ws = box.workspace()
    box.module(ws, DECODE, so="truncated", depfiles=2)
    box.module(ws, FA2, so="missing", objects=2)
    box.module(ws, "norm", so="good")
    return ws


def test_fix_then_undo_is_byte_identical(box, tmp_path):
    ws = broken_box(box)
    env = fix_env(box, tmp_path / "state")
    before = tree_hashes(box.base)
    assert finding_ids(env).count(ID) == 2

    r = cli(FIX, env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "quarantine-module (safe)" in r.stdout and "fixed:" in r.stdout
    assert ID not in finding_ids(env)
    assert not (ws / "cached_ops" / DECODE).exists()
    assert (ws / "cached_ops" / "norm" / "norm.so").exists()  # the good module stays warm
    moved = list((ws / "fidoctor-quarantine").glob(f"*/{DECODE}"))
    assert len(moved) == 1 and (moved[0] / "build.ninja").exists()

    h = cli(["history", "--json"], env)
    rows = json.loads(h.stdout)
    assert [r["status"] for r in rows] == ["committed"]
    assert rows[0]["fixes"] == ["quarantine-module"]

    u = cli(["undo"], env)
    assert u.returncode == 0, u.stdout + u.stderr
    assert tree_hashes(box.base) == before
    assert finding_ids(env).count(ID) == 2
    assert json.loads(cli(["history", "--json"], env).stdout)[0]["status"] == "undone"
    again = cli(["undo"], env)
    assert again.returncode == 2 and "nothing to undo" in again.stderr


def test_without_tty_or_yes_only_shows_the_plan(box, tmp_path):
    broken_box(box)
    env = fix_env(box, tmp_path / "state")
    before = tree_hashes(box.base)
    r = cli(["fix", "--no-warmup", "--only", ID], env)
    assert r.returncode == 1
    assert "quarantine-module" in r.stdout and "--yes" in r.stdout
    d = cli(["fix", "--dry-run", "--only", ID], env)
    assert d.returncode == 1 and "nothing was changed" in d.stdout
    assert tree_hashes(box.base) == before
    assert json.loads(cli(["history", "--json"], env).stdout) == []


def test_only_and_skip_select_findings(box, tmp_path):
    broken_box(box)
    env = fix_env(box, tmp_path / "state")
    before = tree_hashes(box.base)
    r = cli(["fix", "--yes", "--no-warmup", "--only", ID, "--skip", ID], env)
    assert r.returncode == 0 and "Nothing to fix" in r.stdout
    r = cli(["fix", "--yes", "--no-warmup", "--only", "build-lock-held"], env)  # none here
    assert r.returncode == 0 and "Nothing to fix" in r.stdout
    r = cli(["fix", "--yes", "--no-warmup", "--only", "some-other-id"], env)  # no such id
    assert r.returncode == 2 and "no such finding id" in r.stderr
    assert tree_hashes(box.base) == before
    r = cli(["fix", "--yes", "--no-warmup", "--only", ID], env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert ID not in finding_ids(env)


def test_proof_warmup_failure_means_not_fixed(box, tmp_path):
    """Without --no-warmup the proof runs the guarded warmup on the fixed module.

    fidoctor's own test interpreter has no flashinfer, so the warmup cannot
    build anything: the finding is gone, but fix must not claim success.
    """
    broken_box(box)
    env = fix_env(box, tmp_path / "state")
    r = cli(["fix", "--yes", "--only", ID], env, timeout=200)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "cache-incomplete-module" in r.stdout and "gone" in r.stdout
    assert "warmup:" in r.stdout and "not fixed: warmup failed" in r.stdout
    assert cli(["undo"], env).returncode == 0


def test_healthy_box_has_nothing_to_fix(box, tmp_path):
    box.module(box.workspace(), "norm", so="good")
    env = fix_env(box, tmp_path / "state")
    r = cli(["fix", "--yes", "--no-warmup", "--only", ID], env)
    assert r.returncode == 0 and "Nothing to fix" in r.stdout


@pytest.mark.parametrize("point", ["after-journal", "after-step", "before-commit"])
def test_sigkill_mid_fix_is_recovered_by_undo(box, tmp_path, point):
    """A real `fidoctor fix` killed by SIGKILL at each point; `undo` restores every byte."""
    broken_box(box)
    state = tmp_path / "state"
    env = fix_env(box, state)
    before = tree_hashes(box.base)
    proc = None
    try:
        proc = spawn_paused(FIX, env, point)
        wait_paused(proc, state, point)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)
        assert proc.returncode == -signal.SIGKILL
    finally:
        kill_and_reap(proc)
    moved = (box.base / ".cache").rglob("fidoctor-quarantine/*/*")
    if point == "after-journal":
        assert tree_hashes(box.base) == before  # journalled, not yet acted on
    else:
        assert any(True for _ in moved)  # the first move happened before the kill
    rows = json.loads(cli(["history", "--json"], env).stdout)
    assert [r["status"] for r in rows] == ["interrupted"]

    blocked = cli(FIX, env)
    assert blocked.returncode == 2 and "interrupted" in blocked.stderr
    assert "fidoctor undo" in blocked.stderr

    u = cli(["undo"], env)
    assert u.returncode == 0, u.stdout + u.stderr
    assert "rolled back interrupted fix" in u.stdout
    assert tree_hashes(box.base) == before
    assert json.loads(cli(["history", "--json"], env).stdout)[0]["status"] == "rolled-back"
    assert finding_ids(env).count(ID) == 2


def test_two_fix_runs_at_once_get_a_clear_message(box, tmp_path):
    broken_box(box)
    state = tmp_path / "state"
    env = fix_env(box, state)
    proc = None
    try:
        proc = spawn_paused(FIX, env, "after-journal")
        wait_paused(proc, state, "after-journal")
        second = cli(FIX, env)
        assert second.returncode == 2
        assert "another fidoctor fix or undo is running" in second.stderr
        assert f"pid {proc.pid}" in second.stderr
        assert "Traceback" not in second.stderr
        busy_undo = cli(["undo"], env)
        assert busy_undo.returncode == 2 and "another fidoctor" in busy_undo.stderr
    finally:
        kill_and_reap(proc)
    assert cli(["undo"], env).returncode == 0  # the kernel dropped the killed holder's lock


def test_ctrl_c_mid_fix_reverts_and_says_so(box, tmp_path):
    broken_box(box)
    state = tmp_path / "state"
    env = fix_env(box, state)
    before = tree_hashes(box.base)
    proc = None
    try:
        proc = spawn_paused(FIX, env, "after-step")
        wait_paused(proc, state, "after-step")
        proc.send_signal(signal.SIGINT)  # what Ctrl-C delivers
        out, err = proc.communicate(timeout=30)
    finally:
        kill_and_reap(proc)
    assert proc.returncode == 2, out + err
    assert "interrupted (Ctrl-C)" in err and "as it was" in err
    assert "Traceback" not in err
    assert tree_hashes(box.base) == before
    assert json.loads(cli(["history", "--json"], env).stdout)[0]["status"] == "rolled-back"


def _make_readonly(path):
    """Immutable as root (chattr +i), read-only mode otherwise; None if neither works."""
    if os.geteuid() != 0:
        path.chmod(0o555)
        return lambda: path.chmod(0o755)
    if not shutil.which("chattr"):
        return None
    r = subprocess.run(["chattr", "+i", str(path)], capture_output=True)
    if r.returncode != 0:
        return None
    return lambda: subprocess.run(["chattr", "-i", str(path)], check=True)


def test_read_only_cache_gives_a_clear_message_and_changes_nothing(box, tmp_path):
    ws = broken_box(box)
    env = fix_env(box, tmp_path / "state")
    before = tree_hashes(box.base)
    undo_ro = _make_readonly(ws / "cached_ops")
    if undo_ro is None:
        pytest.skip("cannot make a directory read-only here (no chattr as root)")
    try:
        r = cli(FIX, env)
    finally:
        undo_ro()
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert "permission denied or immutable" in r.stderr or "not writable" in r.stderr
    assert tree_hashes(box.base) == before
    rows = json.loads(cli(["history", "--json"], env).stdout)
    assert all(row["status"] != "interrupted" for row in rows)


def test_symlink_out_of_the_workspace_is_not_followed(box, tmp_path):
    ws = box.workspace()
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "cached_ops" / "tmp").mkdir(parents=True)
    shutil.rmtree(ws / "cached_ops")
    os.symlink(elsewhere / "cached_ops", ws / "cached_ops")
    box.module(ws, DECODE, so="truncated")
    env = fix_env(box, tmp_path / "state")
    outside = tree_hashes(elsewhere)
    r = cli(FIX, env)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "a symlink leads" in r.stdout and "does not follow" in r.stdout
    assert tree_hashes(elsewhere) == outside


def test_undo_with_unknown_id_is_a_clear_error(box, tmp_path):
    env = fix_env(box, tmp_path / "state")
    r = cli(["undo", "--id", "nope"], env)
    assert r.returncode == 2 and "no fix with id nope" in r.stderr
    h = cli(["history"], env)
    assert h.returncode == 0 and "no fixes recorded" in h.stdout


def test_undo_never_overwrites_a_module_rebuilt_since_the_fix(box, tmp_path):
    ws = broken_box(box)
    env = fix_env(box, tmp_path / "state")
    assert cli(FIX, env).returncode == 0
    rebuilt = box.module(ws, DECODE, so="good")  # the server rebuilt it after the fix
    fresh = tree_hashes(rebuilt)
    u = cli(["undo"], env)
    assert u.returncode == 1, u.stdout + u.stderr
    assert "exists again (rebuilt since the fix?)" in u.stdout
    assert tree_hashes(rebuilt) == fresh  # the new build is untouched
    assert list((ws / "fidoctor-quarantine").glob(f"*/{DECODE}/build.ninja"))  # old one kept


def test_fix_with_pid_reads_the_servers_environment(box, tmp_path):
    """--pid: the cache to fix comes from a real process's /proc/PID/environ."""
    broken_box(box)
    server = subprocess.Popen(["sleep", "120"], env=box.env(), start_new_session=True)
    try:
        env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"), NO_COLOR="1")
        env.pop("FLASHINFER_WORKSPACE_BASE", None)
        r = cli(["fix", "--pid", str(server.pid), "--python", sys.executable, "--yes",
                 "--no-warmup", "--only", ID], env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert str(box.base) in r.stdout
        assert not (box.root / "0.7.2.post1" / "90a" / "cached_ops" / DECODE).exists()
    finally:
        server.kill()
        server.wait()


def _run_on_tty(args, env, answer: bytes):
    """Run fidoctor with a real pseudo-terminal as stdin and type ``answer``."""
    import pty

    master, slave = pty.openpty()
    try:
        p = subprocess.Popen([sys.executable, "-m", "fidoctor", *args], env=env, stdin=slave,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        os.close(slave)
        os.write(master, answer)
        out, err = p.communicate(timeout=120)
    finally:
        os.close(master)
    return p.returncode, out.decode(), err.decode()


def test_interactive_confirmation(box, tmp_path):
    broken_box(box)
    env = fix_env(box, tmp_path / "state")
    before = tree_hashes(box.base)
    rc, out, _ = _run_on_tty(["fix", "--no-warmup", "--only", ID], env, b"n\n")
    assert rc == 1 and "Apply this plan?" in out and "Not applied." in out
    assert tree_hashes(box.base) == before
    rc, out, err = _run_on_tty(["fix", "--no-warmup", "--only", ID], env, b"y\n")
    assert rc == 0, out + err
    assert "applied fix" in out and ID not in finding_ids(env)
