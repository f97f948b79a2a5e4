"""One reader of /proc/PID/stat (``fidoctor.procfs``), and every module that asks it agrees.

Real processes only: one that renames itself ``x) Z (y`` (spaces, both parentheses and a
fake state letter inside its comm, which a parser splitting on the first ``)`` reads as a
zombie), a real zombie (exited, not yet waited for), and a pid that is gone. The expected
values come from psutil, which parses /proc its own way.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest
from proc_helpers import wait_for

from fidoctor import procfs
from fidoctor.live import observe
from fidoctor.proctree import scan_table
from fidoctor.snapshot.context import _not_examinable

ODD = "x) Z (y"
RENAMED = (f"import time\nopen('/proc/self/comm', 'w').write({ODD!r})\n"
           "print('ready', flush=True)\ntime.sleep(60)\n")


def _renamed(procs) -> subprocess.Popen:
    p = procs.start([sys.executable, "-c", RENAMED], stdout=subprocess.PIPE)
    assert p.stdout is not None and p.stdout.readline().strip() == b"ready"
    return p


def test_a_comm_with_parentheses_and_spaces_is_read_the_same_everywhere(procs):
    p = _renamed(procs)
    ps = psutil.Process(p.pid)
    # between its "ready" and its sleep it may still be running: wait for the sleep (the
    # state is parsed after the last ")", never the "Z" inside the name)
    wait_for(lambda: (procfs.read_stat(p.pid) or {}).get("state") == "S", 10, "the sleep")
    st = procfs.read_stat(p.pid)
    assert st is not None
    assert st["comm"] == ODD == ps.name()
    assert st["state"] == "S" and st["ppid"] == os.getpid() == ps.ppid()
    assert st["pgid"] == st["sid"] == p.pid  # started in its own session
    assert not st["flags"] & procfs.PF_KTHREAD
    assert scan_table()[p.pid] == (ODD, os.getpid(), p.pid)
    assert procfs.is_running(p.pid)
    assert _not_examinable(p.pid) is None  # the "Z" inside its name is not its state
    assert observe._stat(p.pid) == (os.getpid(), float(st["starttime"]))
    # psutil's create_time is the same conversion (btime + ticks / SC_CLK_TCK)
    assert abs(procfs.start_epoch(st["starttime"]) - ps.create_time()) < 0.02


def test_a_zombie_is_not_running_and_not_examinable(procs):
    p = procs.start([sys.executable, "-c", "pass"])
    for _ in range(500):  # until it has exited; it stays a zombie: nobody waits for it yet
        st = procfs.read_stat(p.pid)
        if st and st["state"] == "Z":
            break
        time.sleep(0.01)
    assert st and st["state"] == "Z"
    assert not procfs.is_running(p.pid)
    assert "zombie" in (_not_examinable(p.pid) or "")
    assert p.pid in scan_table()  # still in the table, as ps shows it
    p.wait()


def test_a_vanished_pid_is_none_everywhere(procs):
    p = procs.start([sys.executable, "-c", "pass"])
    p.wait()
    assert procfs.read_stat_raw(p.pid) is None and procfs.read_stat(p.pid) is None
    assert not procfs.is_running(p.pid)
    assert observe._stat(p.pid) is None
    assert _not_examinable(p.pid) is None
    assert p.pid not in scan_table()


def test_a_kernel_thread_is_named_as_one():
    kthreads = [pid for pid in scan_table()
                if (procfs.read_stat(pid) or {}).get("flags", 0) & procfs.PF_KTHREAD]
    if not kthreads:  # a pid namespace (container) shows no kernel threads
        pytest.skip("no kernel thread visible in this pid namespace")
    assert "kernel thread" in (_not_examinable(kthreads[0]) or "")


def test_split_stat_takes_the_last_parenthesis_and_rejects_garbage():
    assert procfs.split_stat(b"7 (a) b) (c) R 1 7 7 0") == ("a) b) (c", [b"R", b"1", b"7", b"7",
                                                                       b"0"])
    assert procfs.split_stat(b"7 (a) R 1 7 7 0", 2) == ("a", [b"R", b"1", b"7 7 0"])
    assert procfs.split_stat(b"no parentheses") is None
    assert procfs.split_stat(b"7 )x( R") is None
