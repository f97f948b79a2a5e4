"""Benchmark ``fidoctor diagnose --level quick`` on 10,000 modules (issue 20: p99 < 0.5 s).

Builds a workspace of N module dirs (build.ninja, an object, a gcc-built .so
hard-linked: the quick level reads no ELF, only the cache scan's one open and
fstat per .so) and a JIT log naming each, then runs the whole command
(``python -m fidoctor diagnose --level quick --format prom``, interpreter start
included, bytecode compiled first) R times and prints p50/p99/max wall, peak RSS and
the CPU (user+sys) of each run's whole process tree.

    python bench/bench_quick.py                    # 10,000 modules, 50 runs
    python bench/bench_quick.py --modules 10000 --runs 100
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build(work: Path, n: int) -> Path:
    so = work / "mod.so"
    (work / "mod.c").write_text("int f(int x) { return x + 1; }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(so), str(work / "mod.c")], check=True)
    base = work / "base"
    ws = base / ".cache" / "flashinfer" / "0.7.2.post1" / "90a"
    ops = ws / "cached_ops"
    (ops / "tmp").mkdir(parents=True)
    lines = []
    for i in range(n):
        name = f"batch_prefill_hd{i}"
        d = ops / name
        d.mkdir()
        (d / "build.ninja").write_text(f"name = {name}\ncuda_home = /usr/local/cuda\n")
        (d / f"{name}.cuda.o").write_bytes(b"\x7fELF" + bytes(60))
        os.link(so, d / f"{name}.so")
        (ops / "tmp" / f"{name}.lock").write_bytes(b"")
        lines.append(f"2026-11-29 06:00:00,000 - INFO - flashinfer.jit: Building {name}\n")
    (ws / "flashinfer_jit.log").write_text("".join(lines))
    return base


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--modules", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=50)
    a = ap.parse_args()
    env = dict(os.environ, CUDA_HOME="/usr/local/cuda")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "fidoctor")], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        env["FLASHINFER_WORKSPACE_BASE"] = str(build(Path(tmp), a.modules))
        walls, cpus, codes = [], [], set()
        for _ in range(a.runs):
            t0 = time.monotonic()
            ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            r = subprocess.run([sys.executable, "-m", "fidoctor", "diagnose", "--level", "quick",
                                "--format", "prom"], env=env, capture_output=True, text=True)
            walls.append(time.monotonic() - t0)
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime)
            codes.add(r.returncode)
        walls.sort()
        p99 = walls[min(len(walls) - 1, int(round(0.99 * len(walls))) - 1)]
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"{a.modules} modules, {a.runs} runs, exit codes {sorted(codes)}; load "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(f"wall p50 {statistics.median(walls):.3f} s, p99 {p99:.3f} s, max {walls[-1]:.3f} s;"
              f" peak RSS {rss:.0f} MB")
        print(f"CPU (user+sys, whole tree) p50 {statistics.median(cpus):.3f} s, max "
              f"{max(cpus):.3f} s (on a shared box the wall says as much about the neighbours)")
        print(r.stdout.splitlines()[2:4])


if __name__ == "__main__":
    main()
