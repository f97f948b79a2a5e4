"""Issue 14, class 1: a process is (pid, create time) everywhere a signal is sent.

The defect: a build tree's leaf exits and its pid is reused between fix's preflight and
apply; ``kill.terminate_tree`` rebuilt ``psutil.Process(pid)`` from the bare pid and
SIGKILLed the new, unrelated process. Reproduced for real: a real fix child stopped at
``FIDOCTOR_TEST_PAUSE_AT=after-journal`` (after preflight), the leaf killed and reaped,
and its pid handed to an unrelated process through /proc/sys/kernel/ns_last_pid.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import psutil
import pytest
from conftest import DECODE
from fix_helpers import fix_env, spawn_paused, wait_paused
from proc_helpers import fakecc, make_fifo, reparented, same_alive, start_server, wait_for, write_module

from fidoctor import kill

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(os.geteuid() != 0, reason="ns_last_pid needs root")]
NS_LAST_PID = "/proc/sys/kernel/ns_last_pid"


def spawn_with_pid(procs, want: int, argv, attempts: int = 400) -> subprocess.Popen:
    """Start ``argv`` as pid ``want`` (ns_last_pid = want-1, then fork); other processes on
    this shared machine may take the pid first, so retry."""
    for _ in range(attempts):
        with open(NS_LAST_PID, "w") as f:
            f.write(str(want - 1))
        p = procs.start(argv)
        if p.pid == want:
            return p
        p.kill()
        p.wait()
    pytest.skip(f"could not get pid {want} back on this busy machine")


def identity(pid: int) -> float:
    return psutil.Process(pid).create_time()


def dead_and_reused(procs):
    """A process that existed (pid, create time), then exited; its pid now runs `sleep`."""
    old = procs.start(["sleep", "60"])
    pid, ct = old.pid, identity(old.pid)
    old.kill()
    old.wait()
    time.sleep(0.03)  # create times tick at 10 ms: a reuse inside one tick is indistinguishable
    new = spawn_with_pid(procs, pid, ["sleep", "60"])
    assert identity(pid) != ct
    return pid, ct, new


def test_send_never_signals_a_reused_pid(procs):
    pid, ct, new = dead_and_reused(procs)
    assert kill.send(pid, ct, signal.SIGKILL) is False
    time.sleep(0.2)
    assert new.poll() is None
    assert kill.send(pid, identity(pid), 0) is True  # the right identity is signalled


def test_terminate_tree_skips_a_root_whose_identity_changed(procs):
    """warmup's kill path passes the psutil.Process it judged; a reused pid is not it."""
    old = procs.start(["sleep", "60"])
    judged = psutil.Process(old.pid)
    judged.create_time()  # psutil caches the identity it saw
    old.kill()
    old.wait()
    time.sleep(0.03)
    new = spawn_with_pid(procs, old.pid, ["sleep", "60"])
    assert kill.terminate_tree(judged, grace=0.5, follow_session=False) == []
    assert new.poll() is None
    ct = identity(new.pid)
    assert kill.terminate_tree(new.pid, grace=0.5, expect={new.pid: ct + 5.0},
                               follow_session=False) == []
    assert new.poll() is None


def test_fix_never_kills_a_process_that_took_a_dead_leafs_pid(box, procs, tmp_path):
    ws = box.workspace()
    fifo = make_fifo(tmp_path / "never.fifo")
    bindir = fakecc()
    # The compile step: a leaf (sleep) that the test kills, then the real stuck nvcc.
    mod = write_module(ws, DECODE, "", command=f"sleep 1000; exec {bindir}/nvcc --fifo {fifo} "
                       "-o $out $in")
    server = start_server(procs, ws, DECODE, box.env())
    leaf = procs.find("sleep")
    ninja = procs.find("ninja")
    server.kill()
    server.wait()
    wait_for(lambda: reparented(ninja, server.pid), what="ninja re-parented")
    ninja_ct = identity(ninja)

    state = tmp_path / "state"
    env = fix_env(box, state)
    p = spawn_paused(["fix", "--yes", "--no-warmup", "--only", "build-process-stuck"], env,
                     "after-journal")
    try:
        wait_paused(p, state, "after-journal")  # preflight saw the tree, leaf included
        shell = psutil.Process(leaf).ppid()
        os.kill(leaf, signal.SIGKILL)  # the leaf exits; its shell reaps it and goes on
        wait_for(lambda: not os.path.exists(f"/proc/{leaf}"), what="leaf reaped")
        victim = spawn_with_pid(procs, leaf, ["sleep", "120"])
        victim_ct = identity(victim.pid)
        wait_for(lambda: psutil.Process(shell).name() in ("nvcc", "fakecc"),
                 what="the shell exec'd nvcc")
        (state / "fidoctor" / "test-paused-after-journal").unlink()
        while p.poll() is None:  # later steps pause too: let each one go on
            for m in (state / "fidoctor").glob("test-paused-*"):
                m.unlink()
            time.sleep(0.05)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert same_alive(victim.pid, victim_ct), "an unrelated process that reused a pid was killed"
    assert victim.poll() is None
    assert p.returncode == 0, out + err
    wait_for(lambda: not same_alive(ninja, ninja_ct), timeout=10, what="the stuck ninja gone")
    assert not mod.exists()
