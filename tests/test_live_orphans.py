"""watch --pid WAITER: the lock holder's build progress, and its orphans after a SIGKILL.

Real processes: a holder Python takes the module's real flock (fcntl) and runs the real
/usr/bin/ninja over a build.ninja of two compile edges; a waiter Python polls the same
flock the way FlashInfer's filelock does (LOCK_NB + 50 ms sleeps) and, once it has it and
finds no ``.so``, runs its own ninja of the module. The compile steps are
``proc_helpers.fakecc`` named ``nvcc`` (a gcc-built stand-in for nvcc: no CUDA here), blocked
reading a FIFO until the test writes to it. The H200 run this reproduces is replayed at the
end (tests/fixtures/real-h200/snap_kill.json). No timing is asserted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
from proc_helpers import fakecc

from tests.live_helpers import events_of, fidoctor_argv
from tests.test_live import valid

MODULE = ("batch_prefill_with_kv_cache_dtype_q_f16_dtype_kv_f16_dtype_o_f16_dtype_idx_i32"
          "_head_dim_qk_128_head_dim_vo_128_posenc_0_use_swa_False_use_logits_cap_False"
          "_f16qk_False")
H200 = Path(__file__).parent / "fixtures" / "real-h200"

HOLDER = textwrap.dedent('''
    import fcntl, os, subprocess, sys
    lock, mdir, ready = sys.argv[1:4]
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    open(ready, "w").close()
    subprocess.run(["/usr/bin/ninja", "-C", mdir])
''')

WAITER = textwrap.dedent('''
    import fcntl, os, subprocess, sys, time
    lock, mdir, so, linger = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    while True:                       # filelock's poll loop
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            time.sleep(0.05)
    if not os.path.exists(so):
        subprocess.run(["/usr/bin/ninja", "-C", mdir])
    time.sleep(linger)
''')


def module(tmp_path):
    """A module dir in a workspace: build.ninja with two compile edges blocked on a FIFO."""
    bindir = fakecc()
    ws = tmp_path / "base" / ".cache" / "flashinfer" / "0.7.2.post1" / "90a"
    mdir = ws / "cached_ops" / MODULE
    mdir.mkdir(parents=True)
    (ws / "cached_ops" / "tmp").mkdir()
    gen = ws / "generated" / MODULE
    gen.mkdir(parents=True)
    fifo = tmp_path / "go.fifo"
    os.mkfifo(fifo)
    lines = ["ninja_required_version = 1.3", "rule cuda_compile",
             f"  command = {bindir}/nvcc --fifo {fifo} -o $out $in",
             "rule link", f"  command = {bindir}/cicc -o $out $in", ""]
    objs = []
    for k in range(2):
        (gen / f"k{k}.cu").write_text("// kernel\n")
        objs.append(f"{mdir}/k{k}.cuda.o")
        lines.append(f"build {objs[-1]}: cuda_compile {gen}/k{k}.cu")
    lines.append(f"build {mdir}/{MODULE}.so: link {' '.join(objs)}")
    (mdir / "build.ninja").write_text("\n".join(lines) + "\n")
    lock = ws / "cached_ops" / "tmp" / f"{MODULE}.lock"
    env = dict(os.environ, FLASHINFER_WORKSPACE_BASE=str(tmp_path / "base"))
    return mdir, lock, fifo, env


def start(tmp_path, procs, linger):
    mdir, lock, fifo, env = module(tmp_path)
    (tmp_path / "holder.py").write_text(HOLDER)
    (tmp_path / "waiter.py").write_text(WAITER)
    ready = tmp_path / "ready"
    holder = procs.start([sys.executable, str(tmp_path / "holder.py"), str(lock), str(mdir),
                          str(ready)], env=env)
    ninja = procs.find("ninja")
    procs.find("nvcc")
    assert ready.exists()
    waiter = procs.start([sys.executable, str(tmp_path / "waiter.py"), str(lock), str(mdir),
                          str(mdir / f"{MODULE}.so"), str(linger)], env=env)
    ev = tmp_path / "ev.jsonl"
    watch = procs.start(fidoctor_argv("watch", "--pid", str(waiter.pid), "--events", str(ev),
                                      "--stall-after", "300", "--lock-idle-after", "300",
                                      "--progress-every", "2", "--quiet"), env=env)
    return holder, waiter, watch, ninja, fifo, ev


def wait_for(ev, kind, proc, timeout=60.0):
    deadline = time.time() + timeout
    while True:
        found = [e for e in events_of(ev) if e["event"] == kind]
        if found:
            return found[0]
        assert time.time() < deadline and proc.poll() is None, (kind, events_of(ev))
        time.sleep(0.2)


def tree(pid):
    return {c.pid for c in psutil.Process(pid).children(recursive=True)}


def test_holder_sigkilled_its_orphans_are_named_beside_the_waiters_build(tmp_path, procs):
    holder, waiter, watch, ninja, fifo, ev = start(tmp_path, procs, linger=0)
    wait = wait_for(ev, "lock-wait", watch)
    assert wait["holder_pid"] == holder.pid and wait["module"] == MODULE
    hb = wait["holder_build"]                     # the holder's own build, its progress
    assert hb["pid"] == ninja and hb["owner_pid"] == holder.pid
    assert (hb["edges"], hb["done"], hb["compilers"]) == (2, 0, 2)
    assert "cpu_percent" in hb and f"its build (pid {ninja}): 0/2 objects, 2 compiling" \
        in wait["text"]
    orphans = tree(holder.pid)
    assert ninja in orphans and len(orphans) >= 5  # ninja, 2 × (sh -c, nvcc)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    got = wait_for(ev, "orphans", watch)
    waiter_ninja = next(p for p in tree(waiter.pid) if psutil.Process(p).name() == "ninja")
    assert got["module"] == MODULE and got["finding_id"] == "build-process-stuck"
    assert orphans <= set(got["pids"]), (orphans, got["pids"])
    assert waiter_ninja not in got["pids"] and got["own_build_pid"] == waiter_ninja
    assert f"(pids {' '.join(map(str, got['pids'][:12]))}" in got["text"]
    assert f"lock holder pid {holder.pid} is gone" in got["text"]
    kinds = [e["event"] for e in valid(events_of(ev))]
    assert kinds.index("lock-wait") < kinds.index("lock-end") < kinds.index("orphans")
    end = next(e for e in events_of(ev) if e["event"] == "lock-end")
    assert f"its holder pid {holder.pid} is gone" in end["text"]
    with open(fifo, "w") as f:                    # let every compile finish; the waiter ends
        f.write("go")
    assert waiter.wait(timeout=60) == 0
    assert watch.wait(timeout=60) == 0


def test_holder_finishes_no_orphans_event(tmp_path, procs):
    """The healthy twin: the holder's build ends, the waiter finds the .so and goes on; the
    watch's looks (at lock-end, then 3 and 6 s later) find no orphan."""
    holder, waiter, watch, ninja, fifo, ev = start(tmp_path, procs, linger=8)
    wait = wait_for(ev, "lock-wait", watch)
    assert wait["holder_build"]["pid"] == ninja
    once = subprocess.run(fidoctor_argv("watch", "--pid", str(waiter.pid), "--once", "--state",
                                        str(tmp_path / "once.json")),
                          capture_output=True, text=True, timeout=60)
    assert once.returncode == 0, once.stderr
    assert "status: waiting for the JIT lock of batch_prefill (f16, hd128, FA2) (holder pid " \
        f"{holder.pid} is working; its build (pid {ninja}): 0/2 objects" in once.stderr
    with open(fifo, "w") as f:
        f.write("go")
    assert holder.wait(timeout=60) == 0
    assert waiter.wait(timeout=60) == 0
    assert watch.wait(timeout=60) == 0
    kinds = [e["event"] for e in valid(events_of(ev))]
    assert "lock-end" in kinds and "orphans" not in kinds, kinds
    assert "build-start" not in kinds             # the waiter loaded the holder's module


def test_h200_snapshot_after_the_kill_names_the_holders_orphans_not_the_waiters_ninja():
    """Replay of the H200 run (issue 22 step 6): the processes section 8 s after the holder's
    SIGKILL; the watch's judgement (live.orphans.judge) names the holder's re-parented nvcc
    chains and leaves the waiter's live ninja (pid 7178 under the waiter 6905) out."""
    from fidoctor.live.orphans import judge
    from fidoctor.snapshot import Snapshot

    snap = Snapshot.from_dict(json.loads((H200 / "snap_kill.json").read_text()))
    mdir = next(p["module_dir"] for p in snap.data("processes")["processes"]
                if p["pid"] == 7178)
    found = judge(snap, [mdir])
    assert len(found) == 1 and found[0].severity == "warning"
    pids = found[0].data["pids"]
    assert 7178 not in pids and {6966, 6971, 6991} <= set(pids)
    assert judge(snap, ["/elsewhere/cached_ops/" + MODULE]) == []
