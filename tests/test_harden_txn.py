"""Issue 14, classes 2, 3, 6 and 7: fix and undo never touch what is not theirs, never
restore garbage, survive a full disk and odd journal lines.

Every race is real: a real ``fidoctor fix`` child stopped at a pause point
(FIDOCTOR_TEST_PAUSE_AT) while the test swaps ``cached_ops`` for a symlink, a
real ``renameat2(RENAME_EXCHANGE)`` loop in a second process, real tmpfs
mounts inside the test's temp dir for a full disk.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import multiprocessing
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import DECODE, FA2
from fix_helpers import cli, fix_env, spawn_paused, tree_hashes, wait_paused

from fidoctor.paths import state_dir
from fidoctor.txn import apply_steps, history, undo
from fidoctor.txn.steps import MoveAside, PutFile

pytestmark = pytest.mark.timeout(120)
ID = "cache-incomplete-module"
RENAME_EXCHANGE = 2


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def exchange(a: str, b: str) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.renameat2(-100, os.fsencode(a), -100, os.fsencode(b), RENAME_EXCHANGE)


def broken(box):
    ws = box.workspace()
    box.module(ws, DECODE)
    box.module(ws, FA2, so="text")
    return ws


def outside_twin(tmp_path: Path) -> Path:
    """A dir outside the cache holding a same-named module dir and a precious file."""
    out = tmp_path / "outside" / "cached_ops"
    (out / FA2).mkdir(parents=True)
    (out / FA2 / "precious.txt").write_text("not fidoctor's\n")
    return out


def unpause(state: Path, point: str) -> None:
    (state / "fidoctor" / f"test-paused-{point}").unlink()


def test_cached_ops_swapped_for_a_symlink_between_preflight_and_apply(box, tmp_path):
    """The defect: preflight checked path strings, apply renamed through the swapped link."""
    ws = broken(box)
    outside = outside_twin(tmp_path)
    before_out = tree_hashes(outside.parent)
    state = tmp_path / "state"
    env = fix_env(box, state)
    p = spawn_paused(["fix", "--yes", "--no-warmup", "--only", ID], env, "after-journal")
    try:
        wait_paused(p, state, "after-journal")
        real = ws / "cached_ops.real"
        os.rename(ws / "cached_ops", real)
        os.symlink(outside, ws / "cached_ops")
        unpause(state, "after-journal")
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode != 0, out + err
    assert "no longer a directory" in err and "Traceback" not in err
    assert tree_hashes(outside.parent) == before_out  # nothing outside was moved
    assert not (ws / "fidoctor-quarantine").exists() or not any(
        (ws / "fidoctor-quarantine").rglob("precious.txt"))
    assert (real / FA2 / f"{FA2}.so").exists()  # and the real module was left where it is


def test_undo_refuses_to_put_back_through_a_swapped_symlink(box, tmp_path):
    ws = broken(box)
    outside = outside_twin(tmp_path)
    shutil.rmtree(outside / FA2)  # undo would recreate it here if it followed the link
    state = tmp_path / "state"
    env = fix_env(box, state)
    r = cli(["fix", "--yes", "--no-warmup", "--only", ID], env)
    assert r.returncode == 0, r.stdout + r.stderr
    os.rename(ws / "cached_ops", ws / "cached_ops.real")
    os.symlink(outside, ws / "cached_ops")
    u = cli(["undo"], env)
    assert u.returncode == 1, u.stdout + u.stderr
    assert "not reverted" in u.stdout and "Traceback" not in u.stderr
    assert not (outside / FA2).exists()  # nothing was put outside the cache
    q = list((ws / "fidoctor-quarantine").rglob(f"{FA2}.so"))
    assert q, "the quarantined module stays where it is"
    # Once the swap is undone, undo finishes the job.
    os.unlink(ws / "cached_ops")
    os.rename(ws / "cached_ops.real", ws / "cached_ops")
    u2 = cli(["undo"], env)
    assert u2.returncode == 0, u2.stdout + u2.stderr
    assert (ws / "cached_ops" / FA2 / f"{FA2}.so").exists()


def _exchanger(a: str, b: str, stop) -> None:
    while not stop.is_set():
        exchange(a, b)


def test_rename_exchange_loop_never_moves_the_outside_dir(tmp_path):
    """A real renameat2(RENAME_EXCHANGE) loop swaps cached_ops and a symlink to an outside
    dir as fast as it can while MoveAside steps run: whatever the interleaving, every
    outside dir stays where it is and only the workspace's own dirs reach the quarantine."""
    ws = tmp_path / "ws"
    outside = tmp_path / "outside"
    names = [f"m{i}" for i in range(40)]
    for parent, tag in ((ws / "cached_ops", "inside"), (outside, "outside")):
        for n in names:
            (parent / n).mkdir(parents=True)
            (parent / n / "who").write_text(tag)
    os.symlink(outside, ws / "evil")
    os.environ["XDG_STATE_HOME"] = str(tmp_path / "xdg")
    moved = refused = 0
    try:
        state = state_dir()
        stop = multiprocessing.Event()
        swapper = multiprocessing.Process(target=_exchanger,
                                          args=(str(ws / "cached_ops"), str(ws / "evil"), stop))
        swapper.start()
        try:
            for n in names:
                step = MoveAside(src=str(ws / "cached_ops" / n),
                                 dst=str(ws / "quarantine" / n), root=str(ws))
                try:
                    apply_steps(state, [step], {})
                    moved += 1
                except Exception:
                    refused += 1  # refusing is fine; moving the wrong thing is not
        finally:
            stop.set()
            swapper.join(10)
    finally:
        os.environ.pop("XDG_STATE_HOME", None)
    assert sorted(p.name for p in outside.iterdir()) == sorted(names)
    assert all((outside / n / "who").read_text() == "outside" for n in names)
    q = ws / "quarantine"
    assert not q.is_symlink()
    for d in (q.iterdir() if q.exists() else []):
        assert (d / "who").read_text() == "inside"
    assert moved + refused == len(names)


def test_corrupt_backup_never_replaces_the_good_file(tmp_path, monkeypatch, built_so):
    """The defect: undo wrote a 10-byte damaged backup over the real library, exit 0."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    state = state_dir()
    d = tmp_path / "lib"
    d.mkdir()
    target = d / "libcudart.so.12"
    shutil.copy(built_so, target)
    newer = tmp_path / "newer.so"
    newer.write_bytes(built_so.read_bytes() + b"\0newer")
    step = PutFile(path=str(target), root=str(d), new_sha=sha(newer.read_bytes()),
                   old_sha=sha(target.read_bytes()), source=str(newer))
    out = apply_steps(state, [step], {})
    backup = Path(state) / "transactions" / out.txid / "backups" / "00-libcudart.so.12"
    backup.write_bytes(b"0123456789")  # the backup is damaged
    current = target.read_bytes()
    res = undo(state)
    assert res.left and "damaged" in res.left[0] and "left as it is" in res.left[0]
    assert target.read_bytes() == current  # the working file is untouched
    assert history(state)[-1].status == "committed"  # still open: undo can run again
    r = cli(["undo"], dict(os.environ, XDG_STATE_HOME=str(tmp_path / "xdg")))
    assert r.returncode == 1 and "damaged" in r.stdout, r.stdout + r.stderr


def mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                   check=True)


def umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> None:
    """Fill the tmpfs to the last byte (a file that may already fail to open: full)."""
    try:
        fd = os.open(path / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    except OSError:
        return
    with os.fdopen(fd, "wb", buffering=0) as f:
        for size in (1 << 16, 4096, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                pass


def pad_journals(state: Path) -> None:
    """Fill the last page of every journal with a blank line (which readers skip), so the
    next record needs a new page: with the disk full, every further append fails."""
    for j in (state / "fidoctor" / "transactions").glob("*/journal.jsonl"):
        size = j.stat().st_size
        slack = -size % 4096
        if slack:
            with open(j, "ab") as f:
                f.write(b" " * (slack - 1) + b"\n")


def unfill(path: Path) -> None:
    try:
        os.unlink(path / "filler")
    except FileNotFoundError:
        pass


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_disk_full_during_rollback_says_what_is_where_and_undo_finishes(box, tmp_path):
    """The defect: rollback() wrote its journal inside its own except and died with
    'internal error: OSError ENOSPC', leaving modules in the quarantine, no word of undo."""
    ws = box.workspace()
    box.module(ws, DECODE)
    for i in range(6):
        box.module(ws, f"norm_{i}", so="text", objects=30)  # big intents: pages fill fast
    mod = tmp_path / "state"
    mount_tmpfs(mod, "256k")
    try:
        env = fix_env(box, mod)
        before = tree_hashes(box.root)
        p = spawn_paused(["fix", "--yes", "--no-warmup", "--only", ID], env, "after-step")
        try:
            wait_paused(p, mod, "after-step")
            pad_journals(mod)
            fill(mod)  # full after the first move: a later journal record fails, then rollback's
            marker = mod / "fidoctor" / "test-paused-after-step"
            while p.poll() is None:
                if marker.exists():
                    marker.unlink()
                time.sleep(0.05)
            out, err = p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        assert p.returncode == 2, out + err
        assert "internal error" not in err and "Traceback" not in err
        assert "fidoctor undo --id" in err
        assert "Could not finish reverting" in err and "could not record" in err
        unfill(mod)
        u = cli(["undo"], env)
        assert u.returncode in (0, 1), u.stdout + u.stderr
        assert "Traceback" not in u.stderr
        assert {k: v for k, v in tree_hashes(box.root).items()
                if "fidoctor-quarantine" not in k} == before
    finally:
        umount(mod)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_undo_on_a_full_disk_reports_and_finishes_later(box, tmp_path):
    ws = broken(box)
    before = tree_hashes(box.root)
    mod = tmp_path / "state"
    mount_tmpfs(mod, "256k")
    try:
        env = fix_env(box, mod)
        r = cli(["fix", "--yes", "--no-warmup", "--only", ID], env)
        assert r.returncode == 0, r.stdout + r.stderr
        pad_journals(mod)
        fill(mod)
        u = cli(["undo"], env)
        assert "Traceback" not in u.stderr and "internal error" not in u.stderr
        assert u.returncode == 1 and "once space is freed" in u.stdout, u.stdout + u.stderr
        assert (ws / "cached_ops" / FA2).exists()  # the rename back needs no space: done
        unfill(mod)
        u2 = cli(["undo"], env)
        assert u2.returncode in (0, 1) and "Traceback" not in u2.stderr
        assert {k: v for k, v in tree_hashes(box.root).items()
                if "fidoctor-quarantine" not in k} == before
        h = cli(["history"], env)
        assert h.returncode == 0
    finally:
        umount(mod)


@pytest.mark.parametrize("line", [
    b"[1, 2, 3]",
    b'"just a string"',
    b'{"op": "intent", "step": {}}',
    b'{"op": "done"}',
    b'{"no": "op"}',
])
def test_one_odd_journal_line_does_not_disable_history_or_undo(box, tmp_path, line):
    ws = broken(box)
    before = tree_hashes(ws / "cached_ops")
    state = tmp_path / "state"
    env = fix_env(box, state)
    assert cli(["fix", "--yes", "--no-warmup", "--only", ID], env).returncode == 0
    (jdir,) = (state / "fidoctor" / "transactions").iterdir()
    jpath = jdir / "journal.jsonl"
    raw = jpath.read_bytes()
    first, rest = raw.split(b"\n", 1)
    jpath.write_bytes(first + b"\n" + line + b"\n" + rest)
    h = cli(["history"], env)
    assert h.returncode == 0 and "internal error" not in h.stderr, h.stdout + h.stderr
    u = cli(["undo"], env)
    assert u.returncode == 0, u.stdout + u.stderr
    assert "skipped" in u.stdout
    assert tree_hashes(ws / "cached_ops") == before


def test_unknown_step_field_from_a_newer_fidoctor_is_ignored_with_a_warning(box, tmp_path):
    ws = broken(box)
    before = tree_hashes(ws / "cached_ops")
    state = tmp_path / "state"
    env = fix_env(box, state)
    assert cli(["fix", "--yes", "--no-warmup", "--only", ID], env).returncode == 0
    (jdir,) = (state / "fidoctor" / "transactions").iterdir()
    jpath = jdir / "journal.jsonl"
    recs = [json.loads(x) for x in jpath.read_bytes().splitlines() if x.strip()]
    for r in recs:
        if r.get("op") == "intent":
            r["step"]["added_in_v9"] = {"x": 1}
    jpath.write_text("".join(json.dumps(r) + "\n" for r in recs))
    u = cli(["undo"], env)
    assert u.returncode == 0, u.stdout + u.stderr
    assert "added_in_v9" in u.stdout
    assert tree_hashes(ws / "cached_ops") == before


@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_journal_that_is_a_fifo_or_a_link_to_a_device_does_not_hang(box, tmp_path, kind):
    ws = broken(box)
    state = tmp_path / "state"
    env = fix_env(box, state)
    assert cli(["fix", "--yes", "--no-warmup", "--only", ID], env).returncode == 0
    bad = state / "fidoctor" / "transactions" / "20990101-000000-bad000"
    bad.mkdir()
    if kind == "fifo":
        os.mkfifo(bad / "journal.jsonl")
    else:
        dev = tmp_path / "zero"
        os.mknod(dev, 0o600 | 0o020000, os.makedev(1, 5))  # a real /dev/zero node, ours
        os.symlink(dev, bad / "journal.jsonl")
    h = cli(["history"], env, timeout=30)
    assert h.returncode == 0, h.stdout + h.stderr
    u = cli(["undo"], env, timeout=30)
    assert u.returncode == 0, u.stdout + u.stderr
    assert (ws / "cached_ops" / FA2 / f"{FA2}.so").exists()


def test_put_file_never_writes_through_a_directory_swapped_after_the_plan(tmp_path, built_so):
    """The library dir is replaced by a symlink to another dir holding a same-named file
    between preflight and apply (and again before undo): nothing outside is written."""
    from fidoctor.errors import FidoctorError
    from fidoctor.txn.steps import TxContext

    lib = tmp_path / "site" / "lib"
    lib.mkdir(parents=True)
    target = lib / "libcudart.so.12"
    shutil.copy(built_so, target)
    other = tmp_path / "other"
    other.mkdir()
    (other / "libcudart.so.12").write_bytes(b"someone else's library")
    newer = tmp_path / "newer.so"
    newer.write_bytes(built_so.read_bytes() + b"\0newer")
    step = PutFile(path=str(target), root=str(lib), new_sha=sha(newer.read_bytes()),
                   old_sha=sha(target.read_bytes()), source=str(newer))
    tx = TxContext("t1", str(tmp_path / "backups"), str(tmp_path / "removed"), 0)
    step.preflight(tx)
    os.rename(lib, tmp_path / "site" / "lib.real")
    os.symlink(other, lib)
    with pytest.raises(FidoctorError, match="not the directory it was"):
        step.apply(tx)
    assert (other / "libcudart.so.12").read_bytes() == b"someone else's library"
    assert not [n for n in os.listdir(other) if n != "libcudart.so.12"]
    # Put the real dir back: the step applies; swap again: undo refuses to restore through it.
    os.unlink(lib)
    os.rename(tmp_path / "site" / "lib.real", lib)
    step.apply(tx)
    assert target.read_bytes() == newer.read_bytes()
    os.rename(lib, tmp_path / "site" / "lib.real")
    os.symlink(other, lib)
    with pytest.raises(FidoctorError):
        step.revert(tx)
    assert (other / "libcudart.so.12").read_bytes() == b"someone else's library"


@pytest.mark.parametrize("damage", ["garbage", "empty"])
def test_a_damaged_journal_is_listed_and_undo_says_so_not_no_such_fix(box, tmp_path, damage):
    """A journal whose every record is unreadable (garbage lines, or truncated to nothing)
    used to vanish from history, and `undo --id` said "no fix with id": the fix's copies
    were hidden. Listed as damaged when it left lines or copies; undo names where they are."""
    ws = broken(box)
    state = tmp_path / "state"
    env = fix_env(box, state)
    assert cli(["fix", "--yes", "--no-warmup", "--only", ID], env).returncode == 0
    (jdir,) = (state / "fidoctor" / "transactions").iterdir()
    kept = [p for d in ("backups", "removed") if (jdir / d).is_dir() for p in (jdir / d).iterdir()]
    (jdir / "journal.jsonl").write_bytes(b"\x00\xffnot json\n" * 3 if damage == "garbage" else b"")
    h = cli(["history", "--json"], env)
    assert h.returncode == 0 and "Traceback" not in h.stderr, h.stdout + h.stderr
    rows = {r["id"]: r for r in json.loads(h.stdout)}
    if damage == "empty" and not kept:
        assert jdir.name not in rows  # nothing readable and nothing kept: nothing happened
        return
    assert rows[jdir.name]["status"] == "damaged", rows
    u = cli(["undo", "--id", jdir.name], env)
    assert u.returncode == 2 and "Traceback" not in u.stderr, u.stdout + u.stderr
    assert "damaged" in u.stderr and "no fix with id" not in u.stderr, u.stderr
    assert str(jdir / "backups") in u.stderr
    plain = cli(["history"], env)
    assert plain.returncode == 0 and "damaged" in plain.stdout, plain.stdout
    assert (ws / "cached_ops").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_first_fix_on_a_full_state_disk_says_so_and_changes_nothing(box, tmp_path):
    """QA: the very first fix on a box whose state disk is full (no fix.lock yet): taking the
    lock wrote the holder's note into the new lock file and died with 'internal error: OSError
    ENOSPC'. The lock needs no byte on disk; the journal does, and says so (exit 2, nothing
    moved)."""
    broken(box)
    before = tree_hashes(box.root)
    mod = tmp_path / "state"
    mount_tmpfs(mod, "64k")
    try:
        (mod / "fidoctor").mkdir(mode=0o700)
        fill(mod)
        r = cli(["fix", "--yes", "--no-warmup", "--only", ID], fix_env(box, mod))
        assert "internal error" not in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert r.returncode == 2, r.stdout + r.stderr
        assert "nothing was changed" in r.stderr and "No space" in r.stderr, r.stderr
        assert tree_hashes(box.root) == before
    finally:
        umount(mod)
