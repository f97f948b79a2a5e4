"""fidoctor run / watch on FlashInfer's real JIT path (slow: real nvcc builds for sm_90a).

The server is tests/live_helpers.py's stand-in: a Python in the cached target venv that
imports torch and FlashInfer and calls ``gen_single_decode_module(...).build_and_load()`` —
FlashInfer's own lock, ninja and nvcc. The hung compiler is warmup_helpers.hung_toolkit (a
CUDA_HOME whose nvcc blocks forever: a stand-in for a hung nvcc, which cannot be provoked on
demand); the lock holder is a real ``fcntl.flock`` held by an idle process. No timing is
asserted (bench/bench_live.py measures).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from live_helpers import events_of, fidoctor_argv, module_name, standin, standin_env, workspace
from warmup_helpers import hold_flock, hung_toolkit, kill_and_wait, target_venv

from tests.test_live import valid

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_start(tmp_path_factory):
    """A cold decode build under ``fidoctor run``, with ``watch --pid`` and ``watch --once``
    attached to the same server while it compiles (a build that starts after it serves).
    MAX_JOBS=2: ninja runs two of its three objects at once and queues the third, so the
    ETA is re-estimated from its own progress while the third compiles."""
    target_venv()
    tmp = tmp_path_factory.mktemp("live")
    base = tmp / "base"
    env = standin_env(base, extra={"XDG_CACHE_HOME": str(tmp / "xdg"), "MAX_JOBS": "2"})
    ev, ev2 = tmp / "run.jsonl", tmp / "watch.jsonl"
    out = open(tmp / "out.txt", "wb")  # noqa: SIM115 - closed below
    run = subprocess.Popen(fidoctor_argv("run", "--events", str(ev), "--progress-every", "2",
                                         "--", *standin(tmp, "late", 7)),
                           env=env, stdout=out, stderr=subprocess.PIPE, cwd=tmp)
    watch = once = None
    try:
        deadline = time.time() + 120
        while not events_of(ev):
            assert time.time() < deadline and run.poll() is None
            time.sleep(0.1)
        server = events_of(ev)[0]["pid"]
        watch = subprocess.Popen(fidoctor_argv("watch", "--pid", str(server), "--events",
                                               str(ev2)), env=env, stderr=subprocess.PIPE)
        while not any(e["event"] == "build-start" for e in events_of(ev)):
            assert time.time() < deadline and run.poll() is None, events_of(ev)
            time.sleep(0.2)
        once = subprocess.run(fidoctor_argv("watch", "--pid", str(server), "--once", "--state",
                                            str(tmp / "once.json")),
                              env=env, capture_output=True, text=True, timeout=60)
        _, err = run.communicate(timeout=900)
        _, werr = watch.communicate(timeout=60)
    finally:
        out.close()
        for p in (run, watch):
            if p is not None and p.poll() is None:
                p.kill()
    return {"tmp": tmp, "base": base, "env": env, "rc": run.returncode, "err": err.decode(),
            "out": (tmp / "out.txt").read_text(), "events": events_of(ev),
            "watch_events": events_of(ev2), "watch_rc": watch.returncode, "once": once}


def test_real_cold_build_progress_and_finish_no_stall_exit_code_passed(real_start):
    r = real_start
    assert r["rc"] == 7, r["err"][-3000:]
    assert "server: ready" in r["out"] and "server: module loaded" in r["out"]
    ev = valid(r["events"])
    kinds = [e["event"] for e in ev]
    assert "stall" not in kinds and "diagnosis" not in kinds, kinds
    start = next(e for e in ev if e["event"] == "build-start")
    assert start["module"] == module_name(64) and start["edges"] == 3
    assert start["arch"] == "sm_90a" and start["eta_s"] > 0
    assert "progress" in kinds
    end = next(e for e in ev if e["event"] == "build-end")
    assert end["ok"] is True and end["done"] == 3
    assert ev[-1]["event"] == "exit" and ev[-1]["code"] == 7
    # while the queued third object compiles, the ETA comes from ninja's own .ninja_log
    late = [e for e in ev if e["event"] == "progress" and e["done"] == 2]
    assert late, [e["text"] for e in ev if e["event"] == "progress"]
    assert late[0]["eta_basis"] == "ninja-progress", late[0]
    assert "ETA ≈" in late[0]["text"] and "2/3 objects built in this run" in late[0]["text"]
    assert late[0]["eta_low_s"] <= late[0]["eta_left_s"] <= late[0]["eta_high_s"]
    assert "fidoctor: JIT build started: single_decode (f16, hd64)" in r["err"]
    assert "fidoctor: JIT build finished: single_decode (f16, hd64)" in r["err"]
    # FlashInfer's own log line passed through untouched, before our lines about it
    assert r["err"].index("Building JIT module") < r["err"].index("fidoctor: JIT build started")


def test_real_watch_pid_and_once_on_the_running_server(real_start):
    r = real_start
    once = r["once"]
    assert once.returncode == 0 and "status: building single_decode (f16, hd64)" in once.stderr, \
        once.stderr
    w = valid(r["watch_events"])
    kinds = [e["event"] for e in w]
    assert "build-start" in kinds and "stall" not in kinds
    assert next(e for e in w if e["event"] == "build-end")["ok"] is True
    assert r["watch_rc"] == 0 and w[-1]["event"] == "exit"


def test_real_sigint_is_forwarded_to_a_serving_server(real_start, tmp_path):
    """The warm module loads at once; SIGINT to fidoctor reaches the server, code 130 back."""
    env = real_start["env"]
    out = tmp_path / "out.txt"
    with open(out, "wb") as f:
        p = subprocess.Popen(fidoctor_argv("run", "--", *standin(tmp_path, "now", "serve")),
                             env=env, stdout=f, stderr=subprocess.PIPE)
        deadline = time.time() + 180
        while b"server: ready" not in out.read_bytes():
            assert time.time() < deadline and p.poll() is None
            time.sleep(0.1)
        os.kill(p.pid, signal.SIGINT)
        _, err = p.communicate(timeout=60)
    assert p.returncode == 130
    assert "server: got signal 2" in out.read_text()
    assert "JIT build" not in err.decode()          # warm: nothing compiled, nothing said


def _run_until_exit(procs, args, env, tmp: Path):
    ev = tmp / "ev.jsonl"
    p = procs.start(fidoctor_argv("run", "--events", str(ev), *args), env=env, new_session=False)
    seen = set()
    deadline = time.time() + 600
    while p.poll() is None:
        assert time.time() < deadline, events_of(ev)
        procs.sweep()
        seen |= set(procs.alive()) - {p.pid}
        time.sleep(0.3)
    return p.returncode, valid(events_of(ev)), seen


def test_real_hung_nvcc_is_diagnosed_and_on_stall_exit_leaves_nothing(tmp_path, procs):
    """A toolkit whose nvcc blocks forever (stand-in for a hung nvcc), real FlashInfer above."""
    tk = hung_toolkit(tmp_path / "tk")
    env = standin_env(tmp_path / "base", cuda_home=str(tk))
    rc, ev, seen = _run_until_exit(procs, ["--stall-after", "10", "--on-stall", "exit", "--",
                                           *standin(tmp_path, "now", 0)], env, tmp_path)
    kinds = [e["event"] for e in ev]
    assert rc == 124, kinds
    assert kinds.index("build-start") < kinds.index("stall") < kinds.index("diagnosis")
    diag = next(e for e in ev if e["event"] == "diagnosis")
    assert "build-process-stuck" in [f["id"] for f in diag["findings"]]
    assert ev[-1]["code"] == 124 and ev[-1]["survivors"] == []
    procs.sweep()
    assert [q for q in procs.alive() if q in seen] == [], "a process of the tree survived"


def test_real_lock_held_by_an_idle_process(tmp_path, procs):
    """A real flock on the module's lock, held by a process that does nothing: the wait is
    reported with its holder, then diagnosed (build-lock-held) after --lock-idle-after."""
    base = tmp_path / "base"
    lock = workspace(base) / "cached_ops" / "tmp" / f"{module_name(64)}.lock"
    holder = hold_flock(lock)
    try:
        env = standin_env(base)
        rc, ev, _ = _run_until_exit(procs, ["--on-stall", "exit", "--",
                                            *standin(tmp_path, "now", 0)], env, tmp_path)
    finally:
        kill_and_wait(holder)
    kinds = [e["event"] for e in ev]
    assert rc == 124, kinds
    wait = next(e for e in ev if e["event"] == "lock-wait")
    assert wait["holder_pid"] == holder.pid and wait["lock_path"] == str(lock)
    assert kinds.index("lock-wait") < kinds.index("stall") < kinds.index("diagnosis")
    diag = next(e for e in ev if e["event"] == "diagnosis")
    assert "build-lock-held" in [f["id"] for f in diag["findings"]]
    assert "build-start" not in kinds


def test_real_compile_error_printed_by_the_server_is_recognised(tmp_path, procs):
    """nvcc rejects a flag: FlashInfer raises 'Ninja build failed' with nvcc's words."""
    env = standin_env(tmp_path / "base",
                      extra={"FLASHINFER_EXTRA_CUDAFLAGS": "--no-such-nvcc-flag"})
    rc, ev, _ = _run_until_exit(procs, ["--", *standin(tmp_path, "now", 0)], env, tmp_path)
    kinds = [e["event"] for e in ev]
    assert rc == 1, kinds                                    # the server's uncaught exception
    errs = [e for e in ev if e["event"] == "server-error"]
    assert errs and {e["kind"] for e in errs} & {"nvcc-flag-unsupported", "jit-build-failed"}
    assert "diagnosis" in kinds and "stall" not in kinds
