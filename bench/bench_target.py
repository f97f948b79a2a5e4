"""Benchmark what finding the right target costs: --pid resolution, --pid auto, the
``serving``, ``gpu`` and ``host_compiler`` gatherers.

Real parts only: a live Python started from the cached target venv's ``bin/python``
(it imports torch, as a server does), this machine's process table and $HOME, and
``--venvs N`` throwaway venvs under a temporary $HOME for the serving search.

    python bench/bench_target.py                   # 5 repeats, 20 venvs
    python bench/bench_target.py --repeat 10 --venvs 200
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
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from warmup_helpers import target_venv  # noqa: E402

from fidoctor.servers import find_serving  # noqa: E402
from fidoctor.snapshot.context import build_context  # noqa: E402
from fidoctor.snapshot.gather import gpu, host_compiler, serving  # noqa: E402


def timed(fn, repeat):
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out), max(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--venvs", type=int, default=20)
    a = ap.parse_args()
    py = target_venv()
    live = subprocess.Popen([str(py), "-c", "import torch, sys; print('ready', flush=True); "
                             "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert live.stdout.readline().strip() == b"ready"
        with tempfile.TemporaryDirectory() as home:
            for i in range(a.venvs):
                v = Path(home) / f"proj{i}" / ".venv"
                (v / "bin").mkdir(parents=True)
                os.symlink(sys.executable, v / "bin" / "python")
                (v / "pyvenv.cfg").write_text("home = /usr/bin\n")
                site = v / "lib" / "python3.11" / "site-packages"
                site.mkdir(parents=True)
                if i % 5 == 0:
                    (site / "flashinfer_python-0.7.2.post1.dist-info").mkdir()
            env = dict(os.environ, HOME=home)
            ctx = SimpleNamespace(env=env, pid=None, python=sys.executable,
                                  python_source="fidoctor's own interpreter")
            rows = [
                ("--pid resolution (venv python, torch mapped)",
                 lambda: build_context(pid=live.pid)),
                ("--pid auto: find_serving() over the process table", find_serving),
                (f"serving gatherer ({a.venvs} venvs under $HOME + live servers)",
                 lambda: serving.gather(ctx, {})),
                ("gpu gatherer (this box)", lambda: gpu.gather(ctx, {})),
                ("host_compiler gatherer (this box)", lambda: host_compiler.gather(ctx, {})),
            ]
            n = len(os.listdir("/proc"))
            print(f"{n} /proc entries, repeat {a.repeat}")
            for name, fn in rows:
                med, worst = timed(fn, a.repeat)
                print(f"{name:<62} median {med * 1000:7.1f} ms   max {worst * 1000:7.1f} ms")
    finally:
        live.kill()
        live.wait()


if __name__ == "__main__":
    main()
