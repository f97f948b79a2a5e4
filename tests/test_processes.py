"""The processes gatherer on real builds: real ninja, real FIFOs, real signals."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest
from conftest import DECODE
from proc_helpers import (
    fakecc,
    make_fifo,
    pid_alive,
    reparented,
    snap_of,
    start_server,
    wait_for,
    write_module,
)

from fidoctor.proctree import build_trees, is_orphaned

pytestmark = pytest.mark.timeout(90)


def _by_pid(snap):
    sec = snap.section("processes")
    assert sec is not None and sec.ok, sec
    return {p["pid"]: p for p in sec.data["processes"]}


def test_orphaned_ninja_blocked_on_fifo(box, procs, tmp_path):
    ws = box.workspace()
    fifo = make_fifo(tmp_path / "never.fifo")
    moddir = write_module(ws, DECODE, f"--fifo {fifo}")
    server = start_server(procs, ws, DECODE, box.env())
    nvcc, ninja = procs.find("nvcc"), procs.find("ninja")
    server.kill()
    server.wait()
    wait_for(lambda: reparented(ninja, server.pid), what="ninja re-parented")
    by = _by_pid(snap_of(box.env()))
    root, step = by[ninja], by[nvcc]
    assert os.path.normpath(root["module_dir"]) == os.path.normpath(str(moddir))
    assert step["module"] == DECODE
    # The subreaper (this pytest, another session) adopted ninja: orphaned.
    assert root["ppid"] == os.getpid() and root["parent_is_python"]
    assert root["parent_sid"] != root["sid"]
    assert root["orphaned"] is True and is_orphaned(root)
    assert step["state_code"] == "S" and step["cpu_delta_s"] < 0.02
    assert step["pgid"] != root["pgid"], "ninja runs each step in a group of its own"
    assert server.pid not in by
    assert ninja in step["ppid_chain"] or step["ppid"] == ninja
    # Other boxes on this shared machine may build too: look at ours only.
    trees = [t for t in build_trees(list(by.values())) if str(box.base) in t["module_dir"]]
    assert [t["root"]["pid"] for t in trees] == [ninja]


def test_attached_progressing_build(box, procs):
    ws = box.workspace()
    write_module(ws, DECODE, "--burn 60")
    server = start_server(procs, ws, DECODE, box.env())
    nvcc, ninja = procs.find("nvcc"), procs.find("ninja")
    by = _by_pid(snap_of(box.env()))
    assert by[ninja]["orphaned"] is False
    assert by[ninja]["ppid"] == server.pid and by[server.pid]["module_dir"] is None
    assert by[ninja]["env_max_jobs"] is None
    assert by[nvcc]["cpu_delta_s"] >= 0.02, by[nvcc]
    assert by[nvcc]["rss"] > 0 and by[nvcc]["create_time"] > 0


def test_stopped_compiler_has_state_T(box, procs):
    ws = box.workspace()
    write_module(ws, DECODE, "--burn 60")
    start_server(procs, ws, DECODE, box.env())
    nvcc = procs.find("nvcc")
    os.kill(nvcc, signal.SIGSTOP)
    procs.find("nvcc", state="stopped")
    by = _by_pid(snap_of(box.env()))
    assert by[nvcc]["state_code"] == "T" and by[nvcc]["cpu_delta_s"] == 0.0


def test_compiler_outside_the_cache_is_ignored(box, procs, tmp_path):
    box.workspace()
    procs.start([str(fakecc() / "nvcc"), "--burn", "60", "-o", str(tmp_path / "x.o")])
    pid = procs.find("nvcc")
    sec = snap_of(box.env()).section("processes")
    assert sec.ok and pid not in {p["pid"] for p in sec.data["processes"]}
    if not sec.data["processes"]:  # another box on this machine may be building
        assert sec.data["sample_window_s"] == 0.0, "nothing builds: no sampling wait"


def test_orphan_rule_on_plain_facts():
    base = {"pid": 10, "ppid": 5, "sid": 5, "parent_exists": True, "parent_sid": 5,
            "parent_is_python": True}
    assert not is_orphaned(base)
    assert is_orphaned(dict(base, parent_exists=False))
    assert is_orphaned(dict(base, ppid=1, parent_is_python=False, parent_sid=1))
    assert not is_orphaned(dict(base, ppid=1, parent_sid=5))  # the server is pid 1
    assert is_orphaned(dict(base, parent_sid=99))  # adopted by a subreaper
    assert not is_orphaned(dict(base, parent_is_python=False))  # a shell ran ninja
    assert not is_orphaned(dict(base, sid=10, parent_sid=1))  # setsid: leads its own session


def test_pid_alive_reads_the_state_after_the_last_paren(procs, tmp_path):
    """The shared test helper that says "no PID survives": a process whose name holds
    ``") Z "`` is alive, and after it is killed and reaped it is not."""
    odd = tmp_path / "a) Z b"
    shutil.copy(shutil.which("sleep"), odd)
    p = procs.start([str(odd), "60"])
    comm = Path(f"/proc/{p.pid}/comm")
    wait_for(lambda: comm.read_text().startswith("a) Z"), what="the copy exec'd")
    assert pid_alive(p.pid)
    p.kill()
    p.wait()
    assert not pid_alive(p.pid)
