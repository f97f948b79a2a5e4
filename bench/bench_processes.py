"""Benchmark the process/lock sampling: what diagnose pays to tell progress from stall.

Times the ``processes`` and ``locks`` gatherers inline (no fork) in three
situations, each with real processes (same helpers as the tests):

* idle: no build, only an unheld flock file (the common case: no wait at all);
* build: N real ninja → nvcc trees (CPU-burning) in a fixture cache, plus a
  real flock holder and a filelock-style poller;
* the same with ``--window 0`` to isolate the scan cost from the window.

Also extra background processes (``--noise``, sleeping ``sleep`` copies) to
show how the scan scales with the size of the process table.

    python bench/bench_processes.py                  # window 0.5 s, 2 builds, 200 noise procs
    python bench/bench_processes.py --builds 4 --noise 1000 --repeat 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from proc_helpers import (  # noqa: E402
    FLOCK_WAITER,
    HOLDER,
    Procs,
    script,
    set_subreaper,
    start_server,
    write_module,
)

from fidoctor.snapshot.context import build_context  # noqa: E402
from fidoctor.snapshot.gather import (  # noqa: E402
    all_gatherers,  # noqa: E402
    cache,
    locks,
    processes,
)
from fidoctor.snapshot.runner import run_inline  # noqa: E402


def _g(name):
    return next(g for g in all_gatherers() if g.name == name)


def time_gatherers(env, window: float, repeat: int):
    ctx = build_context(python=sys.executable, env=env)
    ctx.sample_window_s = window
    out = {"processes": [], "locks": []}
    for _ in range(repeat):
        done = {"cache": run_inline(_g(cache.NAME), ctx, {})}
        for mod in (processes, locks):
            t0 = time.perf_counter()
            sec = run_inline(_g(mod.NAME), ctx, done)
            out[mod.NAME].append((time.perf_counter() - t0) * 1000)
            assert sec.ok, sec.error
    return {k: (statistics.median(v), max(v)) for k, v in out.items()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--window", type=float, default=0.5)
    ap.add_argument("--builds", type=int, default=2)
    ap.add_argument("--noise", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fidoctor-bench-proc-"))
    base = tmp / "base"
    ws = base / ".cache" / "flashinfer" / "0.7.2.post1" / "90a"
    (ws / "cached_ops" / "tmp").mkdir(parents=True)
    env = dict(os.environ, FLASHINFER_WORKSPACE_BASE=str(base))
    set_subreaper(True)
    pr = Procs(tmp)
    try:
        for _ in range(a.noise):
            pr.start(["sleep", "600"], new_session=False)
        (ws / "cached_ops" / "tmp" / "idle_mod.lock").write_bytes(b"")
        print(f"process table: {len(os.listdir('/proc'))} /proc entries, {a.noise} noise procs")
        for label, window in (("idle", a.window),):
            r = time_gatherers(env, window, a.repeat)
            print(f"{label:>22}: processes {r['processes'][0]:7.1f} ms (max {r['processes'][1]:.1f}),"
                  f" locks {r['locks'][0]:7.1f} ms (max {r['locks'][1]:.1f})")
        for i in range(a.builds):
            name = f"bench_mod_{i}"
            write_module(ws, name, "--burn 120")
            start_server(pr, ws, name, env)
        pr.find("nvcc")
        held = ws / "cached_ops" / "tmp" / "held_mod.lock"
        h = pr.python(script(tmp, "holder.py", HOLDER), held, stdout=subprocess.PIPE)
        h.stdout.readline()
        pr.python(script(tmp, "waiter.py", FLOCK_WAITER), held, ws / "flashinfer_jit.log", env=env)
        time.sleep(0.5)
        for label, window in ((f"{a.builds} builds + lock, w={a.window}", a.window),
                              (f"{a.builds} builds + lock, w=0", 0.0)):
            r = time_gatherers(env, window, a.repeat)
            print(f"{label:>22}: processes {r['processes'][0]:7.1f} ms (max {r['processes'][1]:.1f}),"
                  f" locks {r['locks'][0]:7.1f} ms (max {r['locks'][1]:.1f})")
    finally:
        left = pr.kill_all()
        set_subreaper(False)
        print("survivors:", left)
    return 0


if __name__ == "__main__":
    sys.exit(main())
