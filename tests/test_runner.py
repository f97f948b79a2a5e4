"""Gatherer budgets: a hung gatherer becomes a 'timeout' fact, never a hung diagnose."""

from __future__ import annotations

import os
import time

import psutil

from fidoctor.snapshot.context import build_context
from fidoctor.snapshot.gather import Gatherer, all_gatherers
from fidoctor.snapshot.runner import gather_snapshot


def _hang_on_fifo(ctx, done):
    fifo = ctx.extra["fifo"]
    with open(fifo, "rb") as f:  # blocks forever: nobody writes
        return {"read": len(f.read())}


def _spawns_sleeper(ctx, done):
    import subprocess

    p = subprocess.Popen(["sleep", "600"])
    with open(ctx.extra["pidfile"], "w") as f:
        f.write(str(p.pid))
    time.sleep(600)
    return {}


def _fine(ctx, done):
    return {"value": 42, "saw": sorted(done)}


def _crash(ctx, done):
    raise PermissionError(13, "Permission denied", "/root/secret")


def test_a_blocking_gatherer_times_out_and_the_rest_still_report(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    pidfile = tmp_path / "pid"
    ctx = build_context(env=dict(os.environ))
    ctx.extra.update(fifo=str(fifo), pidfile=str(pidfile))
    gs = [
        Gatherer("fifo", 0.5, (), _hang_on_fifo),
        Gatherer("sleeper", 1.0, (), _spawns_sleeper),
        Gatherer("first", 2.0, (), _fine),
        Gatherer("after", 2.0, ("first",), _fine),
        Gatherer("denied", 2.0, (), _crash),
    ]
    t0 = time.monotonic()
    snap = gather_snapshot(ctx, gatherers=gs)
    elapsed = time.monotonic() - t0
    assert elapsed < 30  # generous: proves "not forever", not a speed claim
    assert snap.sections["fifo"].status == "timeout"
    assert snap.sections["sleeper"].status == "timeout"
    assert snap.sections["first"].data == {"value": 42, "saw": []}
    assert "first" in snap.sections["after"].data["saw"]  # started only after "first"
    assert snap.sections["denied"].status == "denied"
    # The timed-out gatherer's own child was killed with its process group.
    sleeper = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while psutil.pid_exists(sleeper) and time.monotonic() < deadline:
        try:
            if psutil.Process(sleeper).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    assert not psutil.pid_exists(sleeper) or psutil.Process(sleeper).status() == "zombie"


def test_registry_has_the_core_sections():
    names = {g.name for g in all_gatherers()}
    assert {"host", "target", "cache", "jitlog", "processes"} <= names


def test_inline_and_forked_agree(box):
    ctx = build_context(env=box.env())
    ws = box.workspace()
    box.module(ws, "mod_a", so="missing")
    a = gather_snapshot(ctx, only=["cache"])
    b = gather_snapshot(ctx, only=["cache"], inline=True)
    assert a.sections["cache"].data == b.sections["cache"].data
