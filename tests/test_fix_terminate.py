"""terminate-build-tree and remove-stale-baton on real processes, real ninja, real signals.

A stuck build: a stand-in server takes the module's flock and runs /usr/bin/ninja,
whose compile step (the gcc-built fake ``nvcc`` of tests/proc_helpers.py)
blocks forever on a FIFO and *ignores SIGTERM* (``trap '' TERM; exec nvcc``);
the server is then SIGKILLed so ninja is orphaned. Next to it, a progressing
build (``nvcc --burn``) under a live server. `fidoctor fix` must end the
first tree completely and never touch the second.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import psutil
import pytest
from conftest import DECODE, FA2, FA3
from fix_helpers import cli, fix_env, tree_hashes
from proc_helpers import (
    Procs,
    fakecc,
    make_fifo,
    reparented,
    same_alive,
    start_server,
    wait_for,
    write_module,
)

from fidoctor.errors import FidoctorError
from fidoctor.txn import apply_steps
from fidoctor.txn.process import Terminate
from fidoctor.txn.safety import fingerprint
from fidoctor.txn.steps import MoveAside

pytestmark = pytest.mark.timeout(180)


def ignores_term(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        line = next(x for x in f if x.startswith("SigIgn:"))
    return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))


def snapshot_pids(procs: Procs, root: int):
    out = {root: psutil.Process(root).create_time()}
    for c in psutil.Process(root).children(recursive=True):
        out[c.pid] = c.create_time()
    return out


def test_stuck_tree_is_ended_and_a_progressing_build_is_never_touched(box, procs, tmp_path):
    ws = box.workspace()
    fifo = make_fifo(tmp_path / "never.fifo")
    bindir = fakecc()
    stuck_dir = write_module(ws, DECODE, f"--fifo {fifo}")
    ninja_file = stuck_dir / "build.ninja"
    ninja_file.write_text(ninja_file.read_text().replace(
        f"command = {bindir}/nvcc", f"command = trap '' TERM; exec {bindir}/nvcc"))
    server = start_server(procs, ws, DECODE, box.env())
    nvcc_stuck = procs.find("nvcc")
    ninja_stuck = procs.find("ninja")
    assert ignores_term(nvcc_stuck), "the stuck compile must ignore SIGTERM"
    server.kill()
    server.wait()
    wait_for(lambda: reparented(ninja_stuck, server.pid), what="ninja re-parented")
    stuck = snapshot_pids(procs, ninja_stuck)

    live_server = start_compiling(procs, box, ws, FA2)
    progressing = snapshot_pids(procs, live_server.pid)

    env = fix_env(box, tmp_path / "state")
    r = cli(["fix", "--yes", "--no-warmup", "--only", "build-process-stuck"], env, timeout=150)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "terminate-build-tree (caution)" in r.stdout
    wait_for(lambda: not any(same_alive(p, ct) for p, ct in stuck.items()),
             timeout=10, what="stuck tree gone")
    assert all(same_alive(p, ct) for p, ct in progressing.items()), \
        "a progressing build was touched"
    assert not stuck_dir.exists()  # its half-built module went to the quarantine
    assert list((ws / "fidoctor-quarantine").glob(f"*/{DECODE}"))
    assert (ws / "cached_ops" / FA2).exists()

    u = cli(["undo"], env)
    assert u.returncode == 0, u.stdout + u.stderr
    assert "not reversible: terminate build tree" in u.stdout
    assert stuck_dir.exists()
    assert all(same_alive(p, ct) for p, ct in progressing.items())


def test_terminate_step_refuses_a_tree_that_moves_when_rechecked(box, procs, tmp_path):
    """The snapshot may be stale: the step samples the live tree again before signalling."""
    ws = box.workspace()
    write_module(ws, DECODE, "--burn 120")
    server = start_server(procs, ws, DECODE, box.env())
    nvcc = procs.find("nvcc")
    tree = snapshot_pids(procs, server.pid)
    step = Terminate(pids=sorted(tree), create_times={str(p): c for p, c in tree.items()},
                     module_dir=str(ws / "cached_ops" / DECODE))
    with pytest.raises(FidoctorError, match="progressing now"):
        apply_steps(str(tmp_path / "state"), [step], {})
    assert all(same_alive(p, ct) for p, ct in tree.items())
    assert psutil.Process(nvcc).status() != psutil.STATUS_STOPPED


def test_terminate_step_never_signals_a_reused_pid(box, procs, tmp_path):
    p = procs.start(["sleep", "60"])
    step = Terminate(pids=[p.pid], create_times={str(p.pid): 12345.0})  # another process's
    out = apply_steps(str(tmp_path / "state"), [step], {})
    assert out.done and same_alive(p.pid, psutil.Process(p.pid).create_time())


def test_stale_baton_moved_aside_only_when_nobody_has_it_open(box, procs, tmp_path):
    ws = box.workspace("", "90")  # FlashInfer <= 0.2.5 layout: <root>/<arch>/
    mod = box.module(ws, "batch_prefill_old", so="missing", objects=1)
    baton = mod / "lock"
    baton.write_bytes(b"")
    env = fix_env(box, tmp_path / "state")
    holder = procs.start([sys.executable, "-c",
                          f"import time; f = open({str(baton)!r}); print('open', flush=True); "
                          "time.sleep(60)"], stdout=-1)
    assert holder.stdout.readline().strip() == b"open"
    before = tree_hashes(box.base)
    r = cli(["fix", "--yes", "--no-warmup", "--only", "build-lock-held"], env)
    assert baton.exists() and tree_hashes(box.base) == before  # held open: not stale
    assert r.returncode == 1, r.stdout + r.stderr
    assert "not fixed automatically" in r.stdout and "remove-stale-baton" not in r.stdout
    holder.kill()
    holder.wait()

    r = cli(["fix", "--yes", "--no-warmup", "--only", "build-lock-held"], env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "remove-stale-baton" in r.stdout and not baton.exists()
    assert list((ws / "fidoctor-quarantine").glob("*/batch_prefill_old.baton-lock"))
    rows = json.loads(cli(["history", "--json"], env).stdout)
    assert rows[-1]["fixes"] == ["remove-stale-baton"]
    assert cli(["undo"], env).returncode == 0
    assert tree_hashes(box.base) == before
    os.stat(baton)


def test_baton_opened_after_the_plan_is_not_moved(box, procs, tmp_path):
    """remove-stale-baton's step re-checks /proc/*/fd immediately before the rename."""
    ws = box.workspace("", "90")
    mod = box.module(ws, "batch_prefill_old", so="missing", objects=1)
    baton = mod / "lock"
    baton.write_bytes(b"")
    step = MoveAside(src=str(baton), dst=str(ws / "fidoctor-quarantine" / "t" / "b"),
                     root=str(ws), fp=fingerprint(str(baton)), require_closed=True)
    holder = procs.start([sys.executable, "-c", f"import time; f = open({str(baton)!r}); "
                          "print('open', flush=True); time.sleep(60)"], stdout=-1)
    assert holder.stdout.readline().strip() == b"open"
    with pytest.raises(FidoctorError, match=f"open by pid {holder.pid}"):
        apply_steps(str(tmp_path / "state"), [step], {})
    assert baton.exists() and not (ws / "fidoctor-quarantine").exists()


def start_compiling(procs, box, ws, name):
    """A 'server' whose real ninja runs a CPU-burning nvcc for ``name``; returns it once nvcc runs."""
    write_module(ws, name, "--burn 120")
    server = start_server(procs, ws, name, box.env())
    wait_for(lambda: [c for c in psutil.Process(server.pid).children(recursive=True)
                      if c.name() == "nvcc"], what="compiling nvcc")
    return server


def test_orphaned_build_still_compiling_is_ended_only_when_asked(box, procs, tmp_path):
    """Measured on an H100: a SIGKILLed server's FA3 compilers run on for ~70 s at
    ~3.5 GB each and a restart compiles beside them. fidoctor warns; it ends them
    only when asked by name, and never touches a build whose server is alive."""
    ws = box.workspace()
    server = start_compiling(procs, box, ws, FA3)
    ninja = procs.find("ninja")
    server.kill()
    server.wait()
    wait_for(lambda: reparented(ninja, server.pid), what="ninja re-parented")
    orphans = snapshot_pids(procs, ninja)

    live_server = start_compiling(procs, box, ws, FA2)
    alive = snapshot_pids(procs, live_server.pid)

    env = fix_env(box, tmp_path / "state")
    d = cli(["diagnose", "--json"], env)
    mine = [f for f in json.loads(d.stdout)["findings"]
            if f["id"] == "build-process-stuck" and f["subject"].endswith(FA3)]
    assert [f["severity"] for f in mine] == ["warning"], mine
    assert "orphaned build" in mine[0]["title"]
    assert [x["id"] for x in mine[0]["fixes"]] == ["", "terminate-build-tree"]

    r = cli(["fix", "--yes", "--no-warmup", "--only", "build-process-stuck"], env, timeout=150)
    assert "--use terminate-build-tree" in r.stdout, r.stdout + r.stderr
    assert all(same_alive(p, ct) for p, ct in orphans.items()), "ended without being asked"

    r = cli(["fix", "--yes", "--no-warmup", "--only", "build-process-stuck",
             "--use", "terminate-build-tree"], env, timeout=150)
    assert r.returncode == 0, r.stdout + r.stderr
    wait_for(lambda: not any(same_alive(p, ct) for p, ct in orphans.items()),
             timeout=10, what="orphaned tree gone")
    assert all(same_alive(p, ct) for p, ct in alive.items()), "a live server's build was touched"
