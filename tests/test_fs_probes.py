"""cache-on-network-fs on a real sshfs mount, disk-space-low on real filled tmpfs mounts.

Each probe gets a firing box and its healthy twin (the same cache on a local
tmpfs; the same tmpfs with room).
"""

from __future__ import annotations

import fcntl
import sys

import pytest
from conftest import DECODE, FA2, FA3, Box, diagnose_box, run_cli
from fs_helpers import ensure_sshfs, fill, sshfs_loopback, tmpfs


def by_id(diag, id_):
    return [f for f in diag.findings if f.id == id_]


@pytest.fixture
def sshfs_box(tmp_path, built_so, procs):
    why = ensure_sshfs()
    if why:
        pytest.skip(why)
    with sshfs_loopback(tmp_path / "served", tmp_path / "mnt", procs) as mnt:
        (mnt / "base").mkdir()
        yield Box(mnt / "base", built_so), tmp_path / "served" / "base"


def test_cache_on_sshfs_is_named_with_its_lock_semantics(sshfs_box):
    box, served = sshfs_box
    ws = box.workspace()
    box.module(ws, DECODE)
    # the real hazard: a flock through the mount does not exclude one on the served dir
    lock = ws / "cached_ops" / "tmp" / f"{DECODE}.lock"
    with open(lock, "a") as a, open(served / lock.relative_to(box.base), "a") as b:
        fcntl.flock(a, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(b, fcntl.LOCK_EX | fcntl.LOCK_NB)  # would raise on a local filesystem
    diag = diagnose_box(box)
    [f] = by_id(diag, "cache-on-network-fs")
    assert f.severity == "warning" and f.data["fstype"] == "fuse.sshfs"
    assert any("fuse.sshfs from localhost:" in e for e in f.evidence)
    assert "does not forward flock" in f.data["locks"]
    assert f.fixes[0].id == "use-local-workspace"
    assert f.data["workspace_base"].startswith(("/var/tmp/", "/tmp/"))


def test_fix_moves_the_workspace_to_local_disk(sshfs_box, tmp_path):
    box, _ = sshfs_box
    box.module(box.workspace(), DECODE)
    state = tmp_path / "state"
    env = box.env(XDG_STATE_HOME=str(state))
    r = run_cli(["fix", "--yes", "--no-warmup", "--only", "cache-on-network-fs",
                 "--python", sys.executable], env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "FLASHINFER_WORKSPACE_BASE=" in (state / "fidoctor" / "env.sh").read_text()


def test_same_cache_on_local_tmpfs_is_quiet(box):
    with tmpfs(box.base, "512m"):
        box.module(box.workspace(), DECODE)
        assert not by_id(diagnose_box(box), "cache-on-network-fs")


def test_full_cache_fs_is_an_error_and_the_cause_of_the_half_built_module(box):
    with tmpfs(box.base, "16m"):
        ws = box.workspace()
        box.module(ws, DECODE)
        box.module(ws, FA3, so="missing", objects=2, depfiles=1)
        fill(box.base, leave_bytes=1 << 20)
        diag = diagnose_box(box)
        [f] = [x for x in by_id(diag, "disk-space-low") if "the cache" in x.evidence[0]]
        assert f.severity == "error" and f.data["affects"] == ["*"]
        assert f.data["need_bytes"] > f.data["avail_bytes"]
        assert any("statvfs" in e and "free of" in e for e in f.evidence)
        [sym] = by_id(diag, "cache-incomplete-module")
        assert sym.caused_by == "disk-space-low"


def test_out_of_inodes_is_an_error(box):
    with tmpfs(box.base, "64m", inodes="40"):
        ws = box.workspace()
        box.module(ws, FA2, so="missing", objects=1)
        n = 0
        while True:  # use every inode left
            try:
                (box.base / f"f{n}").write_bytes(b"")
            except OSError:
                break
            n += 1
        [f] = by_id(diagnose_box(box), "disk-space-low")
        assert f.severity == "error" and "inodes" in f.title


def test_full_tmpdir_is_named(box, tmp_path):
    tmp = tmp_path / "tmpdir"
    with tmpfs(tmp, "8m"):
        fill(tmp, leave_bytes=0)
        box.module(box.workspace(), DECODE)
        diag = diagnose_box(box, TMPDIR=str(tmp))
        [f] = by_id(diag, "disk-space-low")
        assert f.severity == "error" and f.data["roles"] == ["tmpdir"]
        assert any(c.startswith("export TMPDIR=") for x in f.fixes for c in x.commands)


def test_roomy_tmpfs_twin_is_quiet(box, tmp_path):
    tmp = tmp_path / "tmpdir"
    with tmpfs(box.base, "512m"), tmpfs(tmp, "512m"):
        ws = box.workspace()
        box.module(ws, DECODE)
        box.module(ws, FA3, so="missing", objects=2)
        diag = diagnose_box(box, TMPDIR=str(tmp))
        assert not by_id(diag, "disk-space-low")
        [sym] = by_id(diag, "cache-incomplete-module")
        assert sym.caused_by is None and sym.fixes[0].id == "quarantine-module"


def test_mountinfo_lines_and_lock_semantics_of_real_option_spellings():
    """Lines as the kernel writes them (octal escapes, optional fields, super options)."""
    from fidoctor.mounts import is_network, mount_of, parse_mountinfo
    from fidoctor.probes._fsfacts import lock_semantics

    ms = parse_mountinfo(
        "1 0 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
        "36 1 0:50 / /shared/home\\040dir rw,relatime shared:9 - nfs4 srv:/home "
        "rw,vers=4.2,local_lock=all,addr=10.0.0.1\n"
        "37 1 0:51 / /lus rw - lustre 10.0.0.2@tcp:/fs rw,localflock\n"
        "38 1 0:52 / /ovl rw - fuse.fuse-overlayfs fuse-overlayfs rw\n")
    m = mount_of("/shared/home dir/.cache/flashinfer", ms)
    assert m["fstype"] == "nfs4" and m["mount_point"] == "/shared/home dir"
    assert "local flock" not in lock_semantics("nfs4", m["super_options"])
    assert lock_semantics("nfs4", m["super_options"]).startswith("local_lock=all")
    assert lock_semantics("nfs", ["rw", "nolock"]).startswith("nolock")
    assert lock_semantics("lustre", ["localflock"]).startswith("localflock")
    assert "NotImplementedError" in lock_semantics("lustre", ["rw"])
    assert is_network("nfs4") and is_network("fuse.sshfs") and is_network("lustre")
    assert not is_network("fuse.fuse-overlayfs") and not is_network("ext4")
    assert mount_of("/etc", ms)["fstype"] == "ext4"


def test_full_cache_fixes_are_shell_safe_and_spare_the_targets_own_cache(tmp_path, built_so):
    """A full cache under a base whose path has a space and a ``;`` (real tmpfs), an old
    0.7.1 workspace, and the real FlashInfer 0.7.2 target. The fix commands are run by a
    shell as printed: each must name exactly the dir it means (it printed ``rm -rf /…/my
    cache;x/…/0.7.1`` unquoted: ``rm -rf /…/my`` and then a command ``x/…``). Where the
    target's version is unknown, no workspace is offered for removal (every versioned one
    was, the target's own included)."""
    import shlex

    from warmup_helpers import target_venv

    box = Box(tmp_path / "my cache;x" / "base", built_so)
    box.base.mkdir(parents=True)
    with tmpfs(box.base, "16m"):
        old = box.workspace(version="0.7.1")
        box.module(old, DECODE)
        mine = box.workspace()
        box.module(mine, FA3, so="missing", objects=2)
        fill(box.base, leave_bytes=1 << 20)
        [f] = [x for x in by_id(diagnose_box(box, python=str(target_venv())), "disk-space-low")
               if "the cache" in x.evidence[0]]
        argvs = [shlex.split(c) for fx in f.fixes for c in fx.commands]
        assert ["rm", "-rf", str(old.parent)] in argvs
        assert all(str(mine.parent) not in a for a in argvs)
        assert ["df", "-h", str(box.root)] in argvs
        [du] = [c for fx in f.fixes for c in fx.commands if c.startswith("du ")]
        assert du == f"du -sh {shlex.quote(str(box.root))}/*"
        [f] = [x for x in by_id(diagnose_box(box), "disk-space-low")
               if "the cache" in x.evidence[0]]
        assert not [c for fx in f.fixes for c in fx.commands if c.startswith("rm ")]
