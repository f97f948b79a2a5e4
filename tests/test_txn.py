"""The transaction layer on real files: atomic replace, backups, refusals, rollback, undo."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

import pytest
from fix_helpers import tree_hashes

from fidoctor.errors import FidoctorError
from fidoctor.paths import state_dir
from fidoctor.txn import apply_steps, history, undo
from fidoctor.txn.journal import Journal
from fidoctor.txn.safety import fingerprint
from fidoctor.txn.steps import MoveAside, PutFile

pytestmark = pytest.mark.timeout(60)


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    s = state_dir()
    assert s == str(tmp_path / "xdg" / "fidoctor")
    return s


@pytest.fixture
def lib(tmp_path, built_so):
    """A directory standing in for site-packages/nvidia/cuda_runtime/lib (real ELF files)."""
    d = tmp_path / "lib"
    d.mkdir()
    target = d / "libcudart.so.12"
    shutil.copy(built_so, target)
    target.chmod(0o755)
    os.utime(target, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    newer = tmp_path / "newer.so"
    newer.write_bytes(built_so.read_bytes() + b"\0newer")
    return d, target, newer


def replace_step(target, newer, root) -> PutFile:
    return PutFile(path=str(target), root=str(root), new_sha=sha(newer.read_bytes()),
                   old_sha=sha(target.read_bytes()), source=str(newer))


def test_replace_backs_up_and_undo_restores_bytes_mode_mtime(state, lib):
    d, target, newer = lib
    st0 = os.stat(target)
    before = tree_hashes(d)
    out = apply_steps(state, [replace_step(target, newer, d)], {"plans": []})
    assert target.read_bytes() == newer.read_bytes()
    backups = os.listdir(os.path.join(state, "transactions", out.txid, "backups"))
    assert backups == ["00-libcudart.so.12"]
    assert not [n for n in os.listdir(d) if "fidoctor" in n]  # no temp file left behind
    res = undo(state)
    assert res.txid == out.txid and not res.left
    assert tree_hashes(d) == before
    st1 = os.stat(target)
    assert (st1.st_mode, st1.st_mtime_ns) == (st0.st_mode, st0.st_mtime_ns)
    assert [j.status for j in history(state)] == ["undone"]


def test_file_changed_since_plan_is_refused(state, lib):
    d, target, newer = lib
    step = replace_step(target, newer, d)
    target.write_bytes(b"someone else wrote this")
    with pytest.raises(FidoctorError, match="changed since the plan"):
        apply_steps(state, [step], {})
    assert target.read_bytes() == b"someone else wrote this"


def test_dir_changed_since_plan_is_refused(state, tmp_path):
    ws = tmp_path / "ws"
    mod = ws / "cached_ops" / "m"
    mod.mkdir(parents=True)
    (mod / "a.o").write_bytes(b"1")
    step = MoveAside(src=str(mod), dst=str(ws / "q" / "m"), root=str(ws), fp=fingerprint(str(mod)))
    (mod / "b.o").write_bytes(b"2")  # a build started writing after the plan
    with pytest.raises(FidoctorError, match="changed since the plan"):
        apply_steps(state, [step], {})
    assert mod.exists() and not (ws / "q").exists()


def test_replacing_through_a_symlink_is_refused(state, lib, tmp_path):
    d, target, newer = lib
    link = d / "libcudart.so"
    link.symlink_to(target.name)
    step = PutFile(path=str(link), root=str(d), new_sha=sha(newer.read_bytes()),
                   old_sha=sha(target.read_bytes()), source=str(newer))
    before = tree_hashes(d)
    with pytest.raises(FidoctorError, match="symlink"):
        apply_steps(state, [step], {})
    assert tree_hashes(d) == before


def test_failing_second_step_reverts_the_first(state, lib, tmp_path):
    d, target, newer = lib
    ws = tmp_path / "ws"
    (ws / "cached_ops" / "m").mkdir(parents=True)
    (ws / "q" / "m").mkdir(parents=True)  # destination taken: step 2 must refuse
    before = tree_hashes(tmp_path)
    steps = [replace_step(target, newer, d),
             MoveAside(src=str(ws / "cached_ops" / "m"), dst=str(ws / "q" / "m"), root=str(ws))]
    with pytest.raises(FidoctorError, match="already exists.*Reverted the 1 change"):
        apply_steps(state, steps, {})
    after = tree_hashes(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("xdg")} == before
    assert [j.status for j in history(state)] == ["rolled-back"]


def test_torn_journal_line_is_ignored_and_the_fix_counts_as_interrupted(state, tmp_path):
    j = Journal.create(os.path.join(state, "transactions"), "20990101-000000-aaaaaa", {})
    with open(j.path, "ab") as f:
        f.write(b'{"op": "intent", "n": 0, "st')  # SIGKILL while writing
    again = Journal.load(j.dir)
    assert len(again.records) == 1 and again.status == "interrupted"
    res = undo(state)  # nothing was started: rolling back is a no-op that closes it
    assert not res.done and [x.status for x in history(state)] == ["rolled-back"]


def test_undo_leaves_a_file_changed_after_the_fix_alone(state, lib):
    d, target, newer = lib
    apply_steps(state, [replace_step(target, newer, d)], {})
    target.write_bytes(b"pip reinstalled it")
    res = undo(state)
    assert res.left and "changed since the fix" in res.left[0]
    assert target.read_bytes() == b"pip reinstalled it"


@pytest.fixture
def full_fs(tmp_path):
    """A real, tiny tmpfs (needs root; skipped elsewhere) to fill up."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root): " + r.stderr.decode()[:100])
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_backup_on_a_full_disk_fails_cleanly(tmp_path, monkeypatch, full_fs, built_so):
    monkeypatch.setenv("XDG_STATE_HOME", str(full_fs))
    state = state_dir()
    d = tmp_path / "lib"
    d.mkdir()
    target = d / "libbig.so"
    target.write_bytes(built_so.read_bytes() + os.urandom(200_000))  # larger than the tmpfs
    newer = tmp_path / "new.so"
    newer.write_bytes(b"new")
    before = tree_hashes(d)
    with pytest.raises(FidoctorError, match="no space") as e:
        apply_steps(state, [replace_step(target, newer, d)], {})
    assert "free some space" in e.value.hint
    assert tree_hashes(d) == before
    assert [j.status for j in history(state)] == ["rolled-back"]
    assert not os.listdir(os.path.join(state, "transactions", history(state)[0].txid,
                                       "backups"))  # no partial backup left


def test_move_refuses_a_symlinked_parent_leading_out_of_its_root(state, tmp_path):
    """The step itself checks too, whatever the planner let through."""
    ws = tmp_path / "ws"
    elsewhere = tmp_path / "elsewhere" / "cached_ops"
    (elsewhere / "m").mkdir(parents=True)
    ws.mkdir()
    (ws / "cached_ops").symlink_to(elsewhere)
    before = tree_hashes(tmp_path / "elsewhere")
    step = MoveAside(src=str(ws / "cached_ops" / "m"), dst=str(ws / "q" / "m"), root=str(ws))
    with pytest.raises(FidoctorError, match="does not follow symlinks"):
        apply_steps(state, [step], {})
    assert tree_hashes(tmp_path / "elsewhere") == before and not (ws / "q").exists()


def test_fix_lock_is_reentrant_in_one_process_and_exclusive_across_processes(tmp_path):
    """fix holds the lock while its proof runs warmup, whose quarantine takes it again."""
    import subprocess
    import sys

    from fidoctor.txn import FixLock

    state = str(tmp_path / "state")
    probe = ("import sys; from fidoctor.txn import FixLock\n"
             "try:\n    FixLock(sys.argv[1], 'other').__enter__(); print('got it')\n"
             "except Exception as e:\n    print('refused:', e)\n")
    with FixLock(state, "outer"):
        with FixLock(state, "inner"):
            r = subprocess.run([sys.executable, "-c", probe, state], capture_output=True, text=True)
            assert r.stdout.startswith("refused:") and "outer" in r.stdout
        r = subprocess.run([sys.executable, "-c", probe, state], capture_output=True, text=True)
        assert r.stdout.startswith("refused:"), "leaving the inner block released the lock"
    r = subprocess.run([sys.executable, "-c", probe, state], capture_output=True, text=True)
    assert r.stdout.strip() == "got it"
