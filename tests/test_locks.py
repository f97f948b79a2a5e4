"""The locks gatherer and build-lock-held with real flock holders and real pollers."""

from __future__ import annotations

import fcntl
import os
import time

import pytest
from conftest import DECODE, FA2
from proc_helpers import (
    BATON_WAITER,
    FLOCK_WAITER,
    HOLDER,
    script,
    snap_of,
    start_server,
    wait_for,
    write_module,
)

from fidoctor.diagnosis import diagnose
from fidoctor.proclocks import parse_proc_locks

pytestmark = pytest.mark.timeout(90)


def _lock(snap, path):
    sec = snap.section("locks")
    assert sec is not None and sec.ok, sec
    [lk] = [x for x in sec.data["locks"] if x["path"] == str(path)]
    return sec.data, lk


def _held(procs, ws, name):
    lock = ws / "cached_ops" / "tmp" / f"{name}.lock"
    p = procs.python(script(procs.tmp, "holder.py", HOLDER), lock, stdout=-1)
    assert p.stdout.readline().strip() == b"locked"
    return p, lock


def _waiter(procs, ws, lock, box, body=FLOCK_WAITER):
    """Start a poller and return once it is polling (its jit log is open, then two rounds)."""
    log = ws / "flashinfer_jit.log"
    p = procs.python(script(procs.tmp, "waiter.py", body), lock, log, env=box.env())

    def log_open():
        try:
            return any(os.readlink(f"/proc/{p.pid}/fd/{n}") == str(log)
                       for n in os.listdir(f"/proc/{p.pid}/fd"))
        except OSError:
            return False

    wait_for(log_open, what="the waiter to start polling")
    time.sleep(0.25)
    return p


def test_proc_locks_dev_is_hex_major_minor(tmp_path):
    path = tmp_path / "x.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        st = os.fstat(fd)
        with open("/proc/locks") as f:
            mine = [e for e in parse_proc_locks(f.read()) if e["ino"] == st.st_ino]
        assert [(e["kind"], e["mode"], e["pid"], e["blocked"]) for e in mine] == [
            ("FLOCK", "WRITE", os.getpid(), False)]
        assert (mine[0]["major"], mine[0]["minor"]) == (os.major(st.st_dev), os.minor(st.st_dev))
    finally:
        os.close(fd)
    blocked = parse_proc_locks("2: -> FLOCK  ADVISORY  WRITE 77 fe:01:123 0 EOF\ngarbage\n")
    assert blocked == [{"kind": "FLOCK", "mode": "WRITE", "pid": 77, "major": 0xfe,
                        "minor": 1, "ino": 123, "blocked": True}]


def test_idle_holder_with_polling_waiter_is_error(box, procs):
    ws = box.workspace()
    write_module(ws, DECODE, "--burn 60")  # module dir exists, nothing builds it
    holder, lock = _held(procs, ws, DECODE)
    waiter = _waiter(procs, ws, lock, box)
    snap = snap_of(box.env())
    data, lk = _lock(snap, lock)
    assert lk["holders"] == [holder.pid] and lk["match"] == "dev+inode"
    assert holder.pid in lk["open_by"]
    w = {x["pid"]: x for x in lk["waiters"]}
    assert waiter.pid in w and w[waiter.pid]["confidence"] in ("seen", "likely")
    assert data["procs"][str(waiter.pid)]["wchan"]
    [f] = [f for f in diagnose(snap).findings if f.id == "build-lock-held"]
    assert f.severity == "error" and "building nothing" in f.title
    assert f.data["holder_pids"] == [holder.pid] and waiter.pid in f.data["waiter_pids"]
    text = "\n".join(f.evidence)
    assert f"holder pid {holder.pid}" in text and f"waiter pid {waiter.pid}" in text


def test_waiter_behind_a_progressing_build_is_info(box, procs):
    ws = box.workspace()
    write_module(ws, DECODE, "--burn 60")
    server = start_server(procs, ws, DECODE, box.env())
    procs.find("nvcc")
    lock = ws / "cached_ops" / "tmp" / f"{DECODE}.lock"
    waiter = _waiter(procs, ws, lock, box)
    snap = snap_of(box.env())
    _, lk = _lock(snap, lock)
    assert lk["holders"] == [server.pid]
    assert waiter.pid in {x["pid"] for x in lk["waiters"]}
    assert server.pid not in {x["pid"] for x in lk["waiters"]}, "a builder is not a waiter"
    [f] = [f for f in diagnose(snap).findings if f.id == "build-lock-held"]
    assert f.severity == "info" and "not a hang" in f.title and f.fixes == []


def test_stale_baton_with_spinning_waiter(box, procs):
    ws = box.workspace()
    moddir = box.module(ws, DECODE, so="missing", objects=1)
    baton = moddir / "lock"
    baton.write_bytes(b"")  # left behind by a SIGKILLed torch build
    waiter = _waiter(procs, ws, baton, box, body=BATON_WAITER)
    snap = snap_of(box.env())
    _, lk = _lock(snap, baton)
    assert lk["style"] == "baton" and lk["open_by"] == []
    assert [x["pid"] for x in lk["waiters"]] == [waiter.pid]
    assert lk["waiters"][0]["confidence"] in ("likely", "possible")
    [f] = [f for f in diagnose(snap).findings if f.id == "build-lock-held"]
    assert f.severity == "error" and "stale" in f.title
    assert [x.id for x in f.fixes] == ["remove-stale-baton"]
    assert f.data["lock_path"] == str(baton) and f.data["waiter_pids"] == [waiter.pid]


def test_baton_held_open_is_not_stale(box, procs):
    ws = box.workspace()
    moddir = box.module(ws, DECODE, so="missing", objects=1)
    baton = moddir / "lock"
    holder = procs.python(script(procs.tmp, "holder.py", HOLDER), baton, stdout=-1)
    assert holder.stdout.readline().strip() == b"locked"
    snap = snap_of(box.env())
    _, lk = _lock(snap, baton)
    assert lk["open_by"] == [holder.pid]
    found = [f for f in diagnose(snap).findings if f.id == "build-lock-held"]
    assert all("remove-stale-baton" not in [x.id for x in f.fixes] for f in found)
    assert [f.data["holder_pids"] for f in found] == [[holder.pid]]


def test_unheld_flock_file_is_harmless_and_quiet(box, procs):
    """Unheld flock files are counted, not listed (10,000 of them were 10 MB of every
    full snapshot); the cache section still lists each file."""
    ws = box.workspace()
    box.module(ws, DECODE)  # a finished build leaves tmp/<name>.lock behind, unheld
    box.module(ws, FA2)
    snap = snap_of(box.env())
    data = snap.data("locks")
    assert data["locks"] == [] and data["idle_lock_files"] == 2
    assert str(ws / "cached_ops" / "tmp" / f"{DECODE}.lock") in [
        lk["path"] for lk in snap.data("cache")["workspaces"][0]["locks"]]
    assert data["sample_window_s"] == 0.0, "nothing to watch: no sampling wait"
    assert [f for f in diagnose(snap).findings if f.id == "build-lock-held"] == []


def test_holder_with_blocked_build_and_waiter_is_error_with_terminate(box, procs, tmp_path):
    """The server holds the flock while its ninja → nvcc waits forever on a FIFO."""
    from proc_helpers import make_fifo

    ws = box.workspace()
    fifo = make_fifo(tmp_path / "never.fifo")
    write_module(ws, DECODE, f"--fifo {fifo}")
    server = start_server(procs, ws, DECODE, box.env())
    nvcc, ninja = procs.find("nvcc"), procs.find("ninja")
    lock = ws / "cached_ops" / "tmp" / f"{DECODE}.lock"
    waiter = _waiter(procs, ws, lock, box)
    diag = diagnose(snap_of(box.env()))
    [f] = [f for f in diag.findings if f.id == "build-lock-held"]
    assert f.severity == "error" and "stuck" in f.title
    assert f.data["holder_pids"] == [server.pid] and waiter.pid in f.data["waiter_pids"]
    assert [x.id for x in f.fixes] == ["terminate-build-tree"]
    assert {ninja, nvcc} <= set(f.data["pids"]) and server.pid not in f.data["pids"]
    # ninja shares the live server's process group: never signal that group.
    assert os.getpgid(server.pid) not in f.data["pgids"]
    # The tree itself: idle with its Python alive is a warning, not an error.
    [s] = [x for x in diag.findings if x.id == "build-process-stuck" and str(box.base) in x.subject]
    assert s.severity == "warning" and s.data["orphaned"] is False


OPENER = '''
"""Keep a lock file open without locking it (a filelock poller between two tries)."""
import os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
print("open", flush=True)
time.sleep(600)
'''


def test_lock_files_behind_symlinks_are_matched_to_their_openers(tmp_path, built_so, procs):
    """The cache is reached through a symlinked base (a home on /scratch) and one lock file
    is itself a symlink: /proc/PID/fd shows real paths, so each lock file's real path must
    be known. The paths are resolved once per directory (10,000 lock files share one),
    the symlinked file on its own; both openers are matched."""
    from conftest import Box

    real = tmp_path / "scratch" / "me"
    real.mkdir(parents=True)
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "me").symlink_to(real)
    box = Box(tmp_path / "home" / "me", built_so)
    ws = box.workspace()
    for m in (DECODE, FA2):
        box.module(ws, m)
    elsewhere = tmp_path / "elsewhere.lock"
    elsewhere.write_bytes(b"")
    linked = ws / "cached_ops" / "tmp" / "linked_mod.lock"
    linked.symlink_to(elsewhere)
    holder, _ = _held(procs, ws, DECODE)  # one held lock: the gather matches open files
    fa2_lock = ws / "cached_ops" / "tmp" / f"{FA2}.lock"
    openers = []
    for path in (fa2_lock, linked):
        p = procs.python(script(procs.tmp, "opener.py", OPENER), path, stdout=-1)
        assert p.stdout.readline().strip() == b"open"
        openers.append(p)
    snap = snap_of(box.env())
    _, lk = _lock(snap, fa2_lock)
    assert openers[0].pid in lk["open_by"] and lk["holders"] == []
    _, lk = _lock(snap, linked)
    assert openers[1].pid in lk["open_by"], lk
    _, lk = _lock(snap, ws / "cached_ops" / "tmp" / f"{DECODE}.lock")
    assert lk["holders"] == [holder.pid] and holder.pid in lk["open_by"]
