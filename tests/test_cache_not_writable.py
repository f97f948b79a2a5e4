"""cache-not-writable on real read-only tmpfs mounts and a real unprivileged server uid.

The "server" for --pid is a real Python process started by ``setpriv`` as
uid/gid 65534 with the box as its FLASHINFER_WORKSPACE_BASE; fidoctor reads
its uid from /proc/PID/status, as it would for a vLLM started as nobody.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import DECODE, FA2, Box, diagnose_box, run_cli
from fs_helpers import remount, tmpfs
from nobody_helpers import nobody_python

from fidoctor.diagnosis import diagnose
from fidoctor.snapshot.context import build_context
from fidoctor.snapshot.runner import gather_snapshot


def by_id(diag, id_):
    return [f for f in diag.findings if f.id == id_]


def test_read_only_cache_names_the_mount_and_explains_the_half_built_module(box):
    with tmpfs(box.base, "512m"):
        ws = box.workspace()
        box.module(ws, DECODE)
        box.module(ws, FA2, so="missing", objects=2, depfiles=1)
        remount(box.base, "ro")
        diag = diagnose_box(box)
        [f] = by_id(diag, "cache-not-writable")
        assert f.severity == "error" and f.data["read_only"] is True
        assert any("mounted read-only" in e and "tmpfs" in e for e in f.evidence)
        assert f.data["affects"]
        [sym] = by_id(diag, "cache-incomplete-module")
        assert sym.caused_by == "cache-not-writable"
        assert sym.fixes[0].commands[0].startswith("fidoctor fix --only cache-not-writable")
        assert sym.data["held_fixes"][0]["id"] == "quarantine-module"
        order = [x.id for x in diag.findings]
        assert order.index("cache-not-writable") < order.index("cache-incomplete-module")
        assert f.fixes[0].id == "use-local-workspace"
        base = f.data["workspace_base"]
        assert f.fixes[0].commands[0].startswith("fidoctor fix --only cache-not-writable")
        assert f.fixes[0].commands[1] == f"# by hand: export FLASHINFER_WORKSPACE_BASE={base}"


def test_unfinished_log_entry_of_a_module_points_to_the_read_only_cache(box):
    import time as _t

    from conftest import log_line

    with tmpfs(box.base, "512m"):
        ws = box.workspace()
        box.module(ws, FA2, so="missing", objects=1)
        box.log(ws, [log_line("new", "building", FA2, _t.time() - 600)])
        remount(box.base, "ro")
        diag = diagnose_box(box)
        [u] = by_id(diag, "jit-log-unfinished")
        assert u.caused_by == "cache-not-writable"
        order = [x.id for x in diag.findings]
        assert order.index("cache-not-writable") < order.index("jit-log-unfinished")


def test_writable_tmpfs_twin_is_quiet(box):
    with tmpfs(box.base, "512m"):
        ws = box.workspace()
        box.module(ws, DECODE)
        diag = diagnose_box(box)
        assert not by_id(diag, "cache-not-writable")
        assert diag.exit_code == 0


def test_fix_points_the_workspace_elsewhere_and_holds_the_quarantine(box, tmp_path):
    state = tmp_path / "state"
    with tmpfs(box.base, "512m"):
        ws = box.workspace()
        box.module(ws, FA2, so="missing", objects=2)
        remount(box.base, "ro")
        env = box.env(XDG_STATE_HOME=str(state))
        r = run_cli(["fix", "--dry-run", "--python", sys.executable], env=env)
        out = r.stdout
        assert "use-local-workspace" in out, out
        assert "held back: caused by cache-not-writable" in out, out
        assert out.index("cache-not-writable") < out.index("cache-incomplete-module  ")
        r = run_cli(["fix", "--yes", "--no-warmup", "--python", sys.executable], env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        text = (state / "fidoctor" / "env.sh").read_text()
        assert "export FLASHINFER_WORKSPACE_BASE=/var/tmp/flashinfer-0" in text
        assert not os.path.exists(ws / "fidoctor-quarantine")  # nothing moved on the ro mount


@pytest.fixture
def open_box(built_so):
    """A box another uid can reach: under /tmp with 0755 dirs (pytest's tmp is 0700)."""
    d = Path(tempfile.mkdtemp(prefix="fidoctor-cnw-", dir="/tmp"))
    os.chmod(d, 0o755)
    (d / "base").mkdir(mode=0o755)
    try:
        yield Box(d / "base", built_so)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _server_as(uid: int, env, procs):
    code = "import time\nprint('up', flush=True)\ntime.sleep(600)\n"
    import subprocess

    p = procs.start(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                     nobody_python(), "-c", code], env=env, stdout=subprocess.PIPE)
    assert p.stdout.readline().strip() == b"up"
    return p


def _diagnose_pid(pid):
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # setpriv execs python: wait for the exec
        if os.readlink(f"/proc/{pid}/exe") == os.path.realpath(nobody_python()):
            break
        time.sleep(0.05)
    return diagnose(gather_snapshot(build_context(pid=pid)))


def test_foreign_owned_cache_fires_for_the_servers_uid_not_ours(open_box, procs):
    box = open_box
    ws = box.workspace()
    box.module(ws, DECODE)
    for d in (box.base, box.base / ".cache", box.root):
        os.chmod(d, 0o755)  # root-owned, as an image built as root leaves it
    p = _server_as(65534, box.env(), procs)
    diag = _diagnose_pid(p.pid)
    [f] = by_id(diag, "cache-not-writable")
    assert f.data["uid"] == 65534 and f.data["read_only"] is False
    assert any(f"/proc/{p.pid}/status" in e for e in f.evidence)
    assert any(e.startswith(f"{box.root}: owner 0:0 mode drwxr-xr-x") and "uid 65534 cannot"
               in e for e in f.evidence), f.evidence
    assert any(x.commands[0].startswith("chown -R 65534:65534") for x in f.fixes)
    assert not by_id(diagnose_box(box), "cache-not-writable")  # root (us) may write it


def test_cache_owned_by_the_servers_uid_is_quiet(open_box, procs):
    box = open_box
    ws = box.workspace()
    box.module(ws, DECODE)
    for dirpath, dirnames, filenames in os.walk(box.base):
        for n in dirnames + filenames + ["."]:
            os.lchown(os.path.join(dirpath, n), 65534, 65534)
    p = _server_as(65534, box.env(), procs)
    diag = _diagnose_pid(p.pid)
    assert not by_id(diag, "cache-not-writable"), [f.evidence for f in diag.findings]


def test_json_carries_caused_by(box):
    with tmpfs(box.base, "512m"):
        ws = box.workspace()
        box.module(ws, FA2, so="missing", objects=2)
        remount(box.base, "ro")
        r = run_cli(["diagnose", "--json", "--python", sys.executable], env=box.env())
        doc = json.loads(r.stdout)
        sym = [f for f in doc["findings"] if f["id"] == "cache-incomplete-module"]
        assert sym and sym[0]["caused_by"] == "cache-not-writable"
        assert all("caused_by" in f for f in doc["findings"])


def test_cache_root_symlinked_to_a_root_owned_dir_is_judged_by_its_target(open_box, procs):
    box = open_box
    real = box.base.parent / "real-cache"
    real.mkdir(mode=0o755)
    (box.base / ".cache").mkdir(mode=0o777)
    os.chmod(box.base, 0o777)
    os.chmod(box.base / ".cache", 0o777)
    box.root.symlink_to(real)  # the link itself is 0777; what it names is root's 0755
    box.module(box.workspace(), DECODE)
    for dirpath, dirnames, _ in os.walk(real):
        for n in dirnames + ["."]:
            os.chmod(os.path.join(dirpath, n), 0o755)
    p = _server_as(65534, box.env(), procs)
    [f] = by_id(_diagnose_pid(p.pid), "cache-not-writable")
    assert any(e.startswith(f"{box.root}: owner 0:0 mode drwxr-xr-x") for e in f.evidence), \
        f.evidence


def test_chown_and_remount_commands_name_a_path_with_a_space_whole(built_so, procs):
    """The base under ``/tmp/…/my cache``: the printed ``chown -R`` (a foreign-owned cache, the
    real uid 65534 server) and ``mount -o remount,rw`` (a real read-only tmpfs) are run by a
    shell as printed; unquoted, ``chown -R 65534:65534 /tmp/…/my cache/base/…`` chowned
    ``/tmp/…/my`` recursively (and a relative ``cache/…``)."""
    import shlex

    d = Path(tempfile.mkdtemp(prefix="fidoctor-cnw-", dir="/tmp"))
    try:
        os.chmod(d, 0o755)
        (d / "my cache" / "base").mkdir(parents=True, mode=0o755)
        os.chmod(d / "my cache", 0o755)
        box = Box(d / "my cache" / "base", built_so)
        box.module(box.workspace(), DECODE)
        for x in (box.base, box.base / ".cache", box.root):
            os.chmod(x, 0o755)
        diag = _diagnose_pid(_server_as(65534, box.env(), procs).pid)
        [f] = by_id(diag, "cache-not-writable")
        [chown] = [shlex.split(c) for x in f.fixes for c in x.commands if c.startswith("chown")]
        assert chown[:3] == ["chown", "-R", "65534:65534"] and len(chown) == 4
        assert chown[3].startswith(str(box.base)), chown
        with tmpfs(box.base, "64m"):
            box.module(box.workspace(), DECODE)
            remount(box.base, "ro")
            [f] = by_id(diagnose_box(box), "cache-not-writable")
            [mount] = [shlex.split(c) for x in f.fixes for c in x.commands
                       if c.startswith("mount")]
            assert mount == ["mount", "-o", "remount,rw", str(box.base)]
    finally:
        shutil.rmtree(d, ignore_errors=True)
