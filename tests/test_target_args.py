"""Printed ``fidoctor …`` commands carry the target (and --arch on a GPU-less box).

Real boxes, real CLI runs, a real live "server" process for --pid.
"""

from __future__ import annotations

import json
import os
import sys
import time

from conftest import DECODE, FA3, log_line, run_cli, snapshot_of

from fidoctor.snapshot import Snapshot
from fidoctor.targetargs import target_args, with_target

NO_GPU = not os.path.exists("/proc/driver/nvidia")


def broken(box):
    ws = box.workspace()  # version 0.7.2.post1, arch 90a
    box.module(ws, DECODE)
    box.module(ws, FA3, so="missing", depfiles=2)
    box.log(ws, [log_line("new", "building", FA3, time.time() - 90)])
    return ws


def commands(doc):
    return [c for f in doc["findings"] for x in f["fixes"] for c in x["commands"]
            if c.startswith("fidoctor ")]


def test_python_target_is_carried_and_arch_on_a_gpu_less_box(box):
    broken(box)
    r = run_cli(["diagnose", "--json", "--python", sys.executable], env=box.env())
    cmds = commands(json.loads(r.stdout))
    fix = [c for c in cmds if c.startswith("fidoctor fix ")]
    assert fix and all(c.endswith(f"--python {sys.executable}") for c in fix), fix
    want = f"--python {sys.executable}" + (" --arch 9.0a" if NO_GPU else "")
    assert all(c.endswith(want) for c in cmds if c.startswith("fidoctor warmup ")), cmds
    # a warmup command (jit-log-unfinished prints one when no cause holds it back)
    extra = target_args(snapshot_of(box))
    assert with_target(f"fidoctor warmup --modules {FA3}", extra) == \
        f"fidoctor warmup --modules {FA3} {want}"
    # and the text output prints the same commands
    text = run_cli(["diagnose", "--python", sys.executable], env=box.env()).stdout
    printed = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("$ fidoctor fix")]
    assert printed and all(ln.endswith(f"--python {sys.executable}") for ln in printed), printed


def test_pid_target_is_carried(box, procs):
    broken(box)
    server = procs.start([sys.executable, "-c", "import time; time.sleep(600)"], env=box.env())
    r = run_cli(["diagnose", "--json", "--pid", str(server.pid)],
                env=dict(os.environ, FLASHINFER_WORKSPACE_BASE="/nonexistent"))
    cmds = commands(json.loads(r.stdout))
    fix = [c for c in cmds if c.startswith("fidoctor fix ")]
    assert fix and all(c.endswith(f"--pid {server.pid}") for c in fix), fix
    # warmup has no --pid: it gets the interpreter that process runs
    assert all(f"--python {sys.executable}" in c for c in cmds if c.startswith("fidoctor warmup"))


def test_a_command_that_names_its_target_is_left_alone():
    snap = Snapshot(context={"python": "/v/bin/python", "pid": None, "env": {}}, sections={})
    extra = target_args(snap)
    assert with_target("fidoctor diagnose --pid <server pid>", extra) == \
        "fidoctor diagnose --pid <server pid>"
    assert with_target("fidoctor fix --only x  # writes an env file", extra) == \
        "fidoctor fix --only x --python /v/bin/python  # writes an env file"
    assert with_target("fidoctor undo", extra) == "fidoctor undo"
    assert with_target("kill -CONT 12", extra) == "kill -CONT 12"
    assert with_target("fidoctor warmup --arch 10.0a", extra) == \
        "fidoctor warmup --arch 10.0a --python /v/bin/python"
