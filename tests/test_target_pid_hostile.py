"""``--pid`` of processes a hurried user points at by mistake, or that changed under them.

Real processes only: a Python whose binary is deleted, then replaced by another Python (an
upgrade) or by bash (what a restart would run is no interpreter at all), and a shell that is
fidoctor's own parent. The target is queried as ``<python> -c <fidoctor's script>``; a PATH
whose ``import`` leaves a marker shows whether a shell ever ran that script.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from target_helpers import base_python

pytestmark = pytest.mark.timeout(180)


def cli(args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "fidoctor", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


def _trap(tmp_path):
    fake = tmp_path / "fakebin"
    fake.mkdir()
    marker = tmp_path / "IMPORT_RAN"
    (fake / "import").write_text(f"#!/bin/sh\necho \"$*\" >> {marker}\n")
    (fake / "import").chmod(0o755)
    return dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}",
                FLASHINFER_WORKSPACE_BASE=str(tmp_path / "ws")), marker


def test_a_server_whose_python_binary_was_replaced(tmp_path, procs):
    """The binary a server runs is deleted (``/proc/PID/exe`` says ``(deleted)``): fidoctor
    queried whatever now sits at that path as if it were the server's interpreter — bash,
    here, ran fidoctor's script with the server's PATH. Now: a deleted binary is said in the
    target line; another Python there is queried as what a restart would run; a non-Python is
    refused (exit 2) and never run."""
    env, marker = _trap(tmp_path)
    exe = tmp_path / "opt" / "bin" / "python3"
    exe.parent.mkdir(parents=True)
    shutil.copy(base_python(), exe)
    server = procs.start([str(exe), "-c", "import time; time.sleep(600)"], env=env)
    assert os.readlink(f"/proc/{server.pid}/exe") == str(exe)  # Popen returns after exec
    exe.unlink()
    assert os.readlink(f"/proc/{server.pid}/exe").endswith(" (deleted)")
    # 1. deleted, nothing there: diagnosed, the target says why it cannot be queried
    r = cli(["diagnose", "--json", "--pid", str(server.pid)], env=env)
    doc = json.loads(r.stdout)
    assert "replaced on disk since it started" in doc["target"]["source"], doc["target"]
    # 2. an upgrade put another Python there: queried, and said
    shutil.copy(base_python(), exe)
    r = cli(["diagnose", "--json", "--pid", str(server.pid)], env=env)
    doc = json.loads(r.stdout)
    assert "replaced on disk since it started" in doc["target"]["source"]
    assert not [f for f in doc["findings"] if f["id"] == "target-python-unusable"], doc
    # 3. bash there: refused, never run
    exe.unlink()
    shutil.copy("/bin/bash", exe)
    r = cli(["diagnose", "--pid", str(server.pid)], env=env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and "no Python interpreter" in r.stderr, r.stderr
    assert "(deleted since)" in r.stderr.splitlines()[0]
    assert not marker.exists(), marker.read_text()


def test_the_shell_fidoctor_runs_in_is_refused_without_naming_fidoctor(tmp_path):
    """``fidoctor diagnose --pid $$`` (the user's own shell): refused as no Python, but the
    hint named "the Python below it: --pid <fidoctor's own pid>" — a process that is gone
    by the time the user pastes it."""
    r = subprocess.run(["bash", "-c", f"{sys.executable} -m fidoctor diagnose --pid $$; true"],
                       capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, FLASHINFER_WORKSPACE_BASE=str(tmp_path / "ws")))
    assert "not a Python interpreter" in r.stderr, r.stderr
    assert "the Python below it" not in r.stderr, r.stderr


def test_a_thread_id_is_its_process(tmp_path, procs):
    """``--pid`` of a thread id (what ``top -H``, py-spy and a log's thread column show): /proc
    answers for it like a process, and fidoctor judged the thread as if it were the server
    (``target.pid``, every printed ``--pid``, watch's state file). Now the thread group's
    leader is taken, and stderr says so."""
    ready = tmp_path / "ready"
    server = procs.start([sys.executable, "-c",
                          "import threading, time\n"
                          "t = threading.Thread(target=time.sleep, args=(600,), daemon=True)\n"
                          f"t.start(); open({str(ready)!r}, 'w').close(); time.sleep(600)\n"])
    from proc_helpers import wait_for

    wait_for(ready.exists, what="the server's thread")
    tid = next(int(t) for t in os.listdir(f"/proc/{server.pid}/task") if int(t) != server.pid)
    r = cli(["diagnose", "--json", "--pid", str(tid)],
            env=dict(os.environ, FLASHINFER_WORKSPACE_BASE=str(tmp_path / "ws")))
    doc = json.loads(r.stdout)
    assert doc["target"]["pid"] == server.pid, doc["target"]
    assert f"{tid} is a thread of process {server.pid}" in r.stderr, r.stderr


def test_watch_of_a_process_in_another_mount_namespace_is_refused(tmp_path, procs):
    """``diagnose --pid`` refuses a container's server (its paths are not ours); ``watch --once
    --pid`` of the same process said "status: not compiling", exit 0 — a liveness verdict on
    build dirs it cannot see. A real ``unshare -m`` process."""
    import shutil

    if not shutil.which("unshare"):
        pytest.skip("no unshare(1) here")
    ready = tmp_path / "ready"
    p = procs.start(["unshare", "-m", sys.executable, "-c",
                     f"import time; open({str(ready)!r}, 'w').close(); time.sleep(600)"])
    from proc_helpers import wait_for

    wait_for(ready.exists, what="the process in its own mount namespace")
    pid = p.pid  # unshare execs the python in place
    if os.readlink(f"/proc/{pid}/ns/mnt") == os.readlink("/proc/self/ns/mnt"):
        pytest.skip("unshare -m gave no new mount namespace here")
    for cmd in (["watch", "--once", "--pid", str(pid), "--state", str(tmp_path / "s.json")],
                ["diagnose", "--pid", str(pid)]):
        r = cli(cmd)
        assert r.returncode == 2 and "another mount namespace" in r.stderr, (cmd, r.stderr)
