"""QA of `fidoctor undo` against journals that were edited by hand (or by whoever could write the
state dir): valid JSON, well-typed steps, but pointing undo at things the fix never made. The
journals are real files under a real XDG_STATE_HOME; undo is the real CLI; the files it must not
touch are real files and dirs in the test's temp dir (and /etc/passwd, read only)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from conftest import run_cli

TX = "20261129-000000-abcdef"


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def write_journal(state: Path, step: dict) -> Path:
    d = state / "fidoctor" / "transactions" / TX
    (d / "backups").mkdir(parents=True)
    recs = [{"op": "begin", "txid": TX, "time": 1.0, "pid": 1, "command": "fix",
             "steps": ["hand-edited"]},
            {"op": "intent", "n": 0, "step": step}, {"op": "done", "n": 0}, {"op": "commit"}]
    (d / "journal.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return d


def tree(root: Path) -> dict:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            p = Path(dirpath) / n
            out[str(p)] = p.read_bytes() if p.is_file() and not p.is_symlink() else None
    return out


@pytest.mark.parametrize("case", ["backup-etc-passwd", "backup-other-fix", "move-from-outside",
                                  "staging-outside", "move-in-from-outside"])
def test_undo_refuses_a_journal_pointing_outside_its_own_copies(tmp_path, case):
    ws = tmp_path / "ws"
    (ws / "cached_ops").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    state = tmp_path / "state"
    victim = ws / "env.sh"
    victim.write_text("export MAX_JOBS=4\n")
    if case.startswith("backup"):
        if case == "backup-etc-passwd":
            backup = Path("/etc/passwd")
        else:  # another fix's backup dir, in the same state dir
            other = state / "fidoctor" / "transactions" / "20261128-000000-000000" / "backups"
            other.mkdir(parents=True)
            backup = other / "00-env.sh"
            backup.write_text("export LD_PRELOAD=/tmp/evil.so\n")
        step = {"kind": "put-file", "path": str(victim), "root": str(ws),
                "new_sha": sha(victim), "old_sha": sha(backup), "backup": str(backup)}
    elif case == "move-from-outside":
        (outside / "secret").write_text("not fidoctor's\n")
        step = {"kind": "move-aside", "src": str(ws / "cached_ops" / "mod"),
                "dst": str(outside / "secret"), "root": str(tmp_path)}
    elif case == "staging-outside":
        (outside / "fidoctor-import" / "data").mkdir(parents=True)
        (outside / "fidoctor-import" / "data" / "precious").write_text("keep\n")
        step = {"kind": "staging", "path": str(outside / "fidoctor-import" / "data"),
                "root": str(tmp_path)}
    else:
        (outside / "secret").write_text("not fidoctor's\n")
        (ws / "cached_ops" / "mod").mkdir()
        step = {"kind": "move-in", "src": str(outside / "secret"),
                "dst": str(ws / "cached_ops" / "mod"), "root": str(tmp_path)}
    write_journal(state, step)
    before_ws, before_out = tree(ws), tree(outside)
    r = run_cli(["undo"], env=dict(os.environ, XDG_STATE_HOME=str(state)))
    assert "Traceback" not in r.stderr
    assert tree(ws) == before_ws, r.stdout + r.stderr
    assert tree(outside) == before_out, r.stdout + r.stderr
    assert victim.read_text() == "export MAX_JOBS=4\n"
    assert r.returncode == 1, r.stdout + r.stderr
    assert "fidoctor did not make it" in r.stdout, r.stdout


NOBODY = 65534


@pytest.mark.parametrize("case", ["other-uid", "world-writable", "symlink-by-other-uid"])
def test_undo_refuses_a_state_dir_someone_else_could_have_written(tmp_path, case):
    """A real state dir that another user owns, or that anyone can write, or that another user
    made a symlink (to a dir of ours): its journal could be theirs. Here it is: a planted
    put-file step that, undone, would take our file away (a file the 'fix' created). undo must
    refuse (exit 2) and touch nothing."""
    victim = tmp_path / "mine" / "authorized_keys"
    victim.parent.mkdir()
    victim.write_text("ssh-ed25519 AAAA me\n")
    base = tmp_path / "xdg"
    real = base / "fidoctor"
    if case == "symlink-by-other-uid":
        real = tmp_path / "ours-elsewhere" / "fidoctor"
    step = {"kind": "put-file", "path": str(victim), "root": str(victim.parent),
            "new_sha": sha(victim), "old_sha": None}
    write_journal(real.parent, step)
    if case == "other-uid":
        for dirpath, dirs, files in os.walk(real):
            for n in [".", *dirs, *files]:
                os.chown(os.path.join(dirpath, n), NOBODY, NOBODY)
    elif case == "world-writable":
        real.chmod(0o777)
    else:
        base.mkdir()
        (base / "fidoctor").symlink_to(real)
        os.lchown(base / "fidoctor", NOBODY, NOBODY)
    r = run_cli(["undo"], env=dict(os.environ, XDG_STATE_HOME=str(base)))
    assert victim.read_text() == "ssh-ed25519 AAAA me\n", r.stdout + r.stderr
    assert r.returncode == 2, r.stdout + r.stderr
    assert "could have been written by someone else" in r.stderr and "Traceback" not in r.stderr


def test_fix_lock_planted_as_a_symlink_is_not_written_through(tmp_path):
    """`<state>/fidoctor/fix.lock` made a symlink to a file: taking the lock used to truncate
    that file and write 'pid N, fidoctor undo…' into it."""
    precious = tmp_path / "precious"
    precious.write_text("keep me\n")
    state = tmp_path / "state" / "fidoctor"
    state.mkdir(parents=True)
    (state / "fix.lock").symlink_to(precious)
    r = run_cli(["undo"], env=dict(os.environ, XDG_STATE_HOME=str(state.parent)))
    assert precious.read_text() == "keep me\n"
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "fix.lock" in r.stderr


def test_a_state_dir_of_our_own_with_umask_002_is_used(tmp_path):
    """Group-writable for the user's own group (what umask 002 gives) is not refused."""
    state = tmp_path / "state"
    old = os.umask(0o002)
    try:
        (state / "fidoctor" / "transactions").mkdir(parents=True, mode=0o775)
        os.chown(state / "fidoctor", os.geteuid(), os.getegid())
    finally:
        os.umask(old)
    r = run_cli(["undo"], env=dict(os.environ, XDG_STATE_HOME=str(state)))
    assert r.returncode == 2 and "nothing to undo" in r.stderr, r.stderr


@pytest.mark.parametrize("when", ["1e308", "-1e308", "NaN", "Infinity", "true"])
def test_history_of_a_journal_with_a_time_out_of_range(tmp_path, when):
    """A begin record whose time was edited to something no clock gives: history lists the fix
    with its time unknown (text) / null (JSON, still valid JSON) instead of an internal error."""
    d = tmp_path / "state" / "fidoctor" / "transactions" / TX
    d.mkdir(parents=True)
    (d / "journal.jsonl").write_text(
        f'{{"op": "begin", "txid": "{TX}", "time": {when}, "command": "fix", "steps": ["a"]}}\n'
        '{"op": "commit"}\n')
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"))
    r = run_cli(["history"], env=env)
    assert r.returncode == 0 and "internal error" not in r.stderr, r.stderr
    assert TX in r.stdout
    r = run_cli(["history", "--json"], env=env)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert [x["id"] for x in rows] == [TX]
    assert rows[0]["time"] is None or isinstance(rows[0]["time"], (int, float))


def test_a_journal_of_millions_of_junk_lines_neither_hangs_nor_floods(tmp_path):
    """A 63 MiB journal of 21 million `{}` lines (under the 64 MiB read cap): history parsed each
    line and kept a warning for each (over 120 s and 2.9 GB before it was killed). Now such a
    file is not read (listed as damaged), and a journal with many bad lines warns about 20 of
    them and counts the rest."""
    d = tmp_path / "state" / "fidoctor" / "transactions" / TX
    d.mkdir(parents=True)
    begin = f'{{"op": "begin", "txid": "{TX}", "time": 1.0, "command": "fix", "steps": []}}\n'
    (d / "journal.jsonl").write_bytes(begin.encode() + b"{}\n" * (21 << 20))
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"))
    r = run_cli(["history", "--json"], env=env, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert [x["status"] for x in json.loads(r.stdout)] == ["damaged"]
    assert len(r.stderr.splitlines()) < 5 and "not read" in r.stderr
    (d / "journal.jsonl").write_bytes(begin.encode() + b"{}\n" * 1000 + b'{"op": "commit"}\n')
    r = run_cli(["history", "--json"], env=env, timeout=60)
    assert [x["status"] for x in json.loads(r.stdout)] == ["committed"], r.stderr[-2000:]
    assert len(r.stderr.splitlines()) <= 21 and "980 more line(s) skipped" in r.stderr


def test_undo_prints_a_fix_id_holding_terminal_escapes_escaped(tmp_path):
    """A journal dir whose name holds an OSC escape (retitles the terminal) and a BEL: history
    showed it escaped, undo printed it raw to the terminal."""
    name = "20261129-000000-a\x1b]0;pwned\x07b"
    d = tmp_path / "state" / "fidoctor" / "transactions" / name
    d.mkdir(parents=True)
    (d / "journal.jsonl").write_text('{"op": "begin", "time": 1.0, "command": "fix", '
                                     '"steps": []}\n{"op": "commit"}\n')
    r = run_cli(["undo"], env=dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state")))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout, repr(r.stdout)
    assert "pwned" in r.stdout


def test_a_killed_fix_whose_module_was_rebuilt_does_not_block_every_later_fix(box, tmp_path):
    """A real quarantine fix SIGKILLed right after its rename, then the module rebuilt at its old
    path: undo rightly leaves both (it never overwrites), but the fix stayed 'interrupted' for
    good, so every later `fix` refused with 'recover it first with: fidoctor undo', which could
    never settle it. Now undo settles it as rolled back, naming what it left; fix runs again."""
    from conftest import FA2
    from fix_helpers import fix_env, kill_and_reap, spawn_paused, wait_paused

    ws = box.workspace()
    box.module(ws, FA2, so="text")
    state = tmp_path / "state"
    env = fix_env(box, state)
    p = spawn_paused(["fix", "--yes", "--no-warmup", "--only", "cache-incomplete-module"], env,
                     "after-step")
    try:
        wait_paused(p, state, "after-step")
    finally:
        kill_and_reap(p)
    (ws / "cached_ops" / FA2).mkdir()
    (ws / "cached_ops" / FA2 / "rebuilt.txt").write_text("newer\n")
    (moved,) = (ws / "fidoctor-quarantine").glob(f"*/{FA2}")
    r = run_cli(["undo"], env=env)
    assert r.returncode == 1 and "left both" in r.stdout, r.stdout + r.stderr
    assert (ws / "cached_ops" / FA2 / "rebuilt.txt").read_text() == "newer\n"
    assert moved.is_dir(), "the moved copy must stay where undo said it is"
    r = run_cli(["fix", "--yes", "--no-warmup", "--only", "cache-incomplete-module"], env=env)
    assert "was interrupted" not in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_undo_on_a_read_only_state_dir_does_not_advise_moving_the_journals_away(tmp_path):
    """A real read-only bind mount over a state dir holding a fix's journal: undo cannot take
    its lock. The hint said 'set XDG_STATE_HOME to a writable directory', which hides that very
    journal from undo; it now says to make this dir writable again."""
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("a bind mount needs root")
    state = tmp_path / "state"
    d = state / "fidoctor" / "transactions" / TX
    d.mkdir(parents=True)
    (d / "journal.jsonl").write_text('{"op": "begin", "time": 1.0, "command": "fix", '
                                     '"steps": []}\n{"op": "commit"}\n')
    subprocess.run(["mount", "--bind", str(state), str(state)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(state)], check=True)
        r = run_cli(["undo"], env=dict(os.environ, XDG_STATE_HOME=str(state)))
        assert r.returncode == 2 and "Read-only file system" in r.stderr, r.stderr
        assert "set XDG_STATE_HOME" not in r.stderr and "writable again" in r.stderr, r.stderr
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False)
