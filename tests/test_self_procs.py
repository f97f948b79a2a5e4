"""diagnose never counts fidoctor's own processes (the CLI process, its forked gatherers, its
warmup child) as lock waiters, holders or builders (issue 18, item 2).

Real processes: a real flock holder, a real filelock-style poller, and the real CLI
(``python -m fidoctor``) started with the cache in its own environment, as a user who
exported FLASHINFER_WORKSPACE_BASE for the server does.
"""

from __future__ import annotations

import json

import pytest
from conftest import DECODE, run_cli
from proc_helpers import HOLDER, script, write_module
from test_locks import _waiter

pytestmark = pytest.mark.timeout(120)


def _lock_finding(box):
    r = run_cli(["diagnose", "--json"], env=box.env())
    assert r.returncode in (0, 1, 3), r.stderr
    doc = json.loads(r.stdout)
    return [f for f in doc["findings"] if f["id"] == "build-lock-held"]


def test_cli_with_the_cache_in_its_env_counts_only_the_real_waiter(box, procs):
    ws = box.workspace()
    write_module(ws, DECODE, "--burn 60")  # module dir exists, nothing builds it
    lock = ws / "cached_ops" / "tmp" / f"{DECODE}.lock"
    holder = procs.python(script(procs.tmp, "holder.py", HOLDER), lock, stdout=-1)
    assert holder.stdout.readline().strip() == b"locked"
    waiter = _waiter(procs, ws, lock, box)
    [f] = _lock_finding(box)
    assert f["data"]["holder_pids"] == [holder.pid]
    assert f["data"]["waiter_pids"] == [waiter.pid], f["evidence"]
    assert "1 process(es) wait" in f["title"]


def test_cli_alone_with_a_held_lock_sees_no_waiter(box, procs):
    """The quiet twin: nobody waits, so fidoctor itself must not be the one waiter."""
    ws = box.workspace()
    write_module(ws, DECODE, "--burn 60")
    lock = ws / "cached_ops" / "tmp" / f"{DECODE}.lock"
    holder = procs.python(script(procs.tmp, "holder.py", HOLDER), lock, stdout=-1)
    assert holder.stdout.readline().strip() == b"locked"
    [f] = _lock_finding(box)
    assert f["data"]["holder_pids"] == [holder.pid]
    assert f["data"]["waiter_pids"] == [], f["evidence"]


def test_a_gatherers_own_interpreter_is_not_a_waiter(box, procs):
    """The real shape of the bug: a sibling gatherer asks a Python interpreter started with
    the target's environment (the cache in it, the jit log open), which sleeps while the
    locks gatherer samples. Without fidoctor's own-process filter it is a 'waiter'."""
    import subprocess
    import sys
    import time

    from fidoctor.snapshot.context import build_context
    from fidoctor.snapshot.gather import Gatherer, all_gatherers
    from fidoctor.snapshot.runner import gather_snapshot

    ws = box.workspace()
    write_module(ws, DECODE, "--burn 60")
    lock = ws / "cached_ops" / "tmp" / f"{DECODE}.lock"
    holder = procs.python(script(procs.tmp, "holder.py", HOLDER), lock, stdout=-1)
    assert holder.stdout.readline().strip() == b"locked"
    log = ws / "flashinfer_jit.log"
    env = box.env()
    asked = procs.tmp / "asked.pid"

    def ask_target(ctx, done):
        p = subprocess.Popen([sys.executable, "-c",
                              "import sys, time; f = open(sys.argv[1], 'a'); time.sleep(3)",
                              str(log)], env=env)
        asked.write_text(str(p.pid))
        p.wait()
        return {"asked": p.pid}

    real = [g for g in all_gatherers() if g.name in ("host", "cache", "jitlog", "processes")]
    locks = next(g for g in all_gatherers() if g.name == "locks")
    slow_locks = Gatherer("locks", locks.budget_s, locks.requires,
                          lambda ctx, done: (time.sleep(0.8), locks.gather(ctx, done))[1])
    ctx = build_context(python=sys.executable, env=env)
    ctx.sample_window_s = 1.0
    snap = gather_snapshot(ctx, gatherers=[*real, Gatherer("asker", 10.0, (), ask_target),
                                           slow_locks])
    sec = snap.section("locks")
    assert sec is not None and sec.ok, sec
    [lk] = [x for x in sec.data["locks"] if x["path"] == str(lock)]
    assert lk["holders"] == [holder.pid]
    asker = int(asked.read_text())
    assert asker not in [w["pid"] for w in lk["waiters"]], lk["waiters"]
    assert lk["waiters"] == []
    assert asker in sec.data["own_pids"]
