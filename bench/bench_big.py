"""Benchmark `fidoctor diagnose --json` on a big box: 10,000 modules and a 2 GB JIT log.

Issue 14's target: diagnose < 2 s on 10,000 modules and a 2 GB log, and the
newest build in the log always judged. Building 10,000 distinct modules with
gcc takes an hour on 2 cores, so this bench builds a pool of distinct gcc
modules (bench_diagnose's recipe: real ELF, real versioned cudart symbols) and
*copies* them to 10,000 module dirs (each copy its own inode, so every ELF
fact is read and cached separately, as on a real box). The log is real 0.7
and 0.2 format lines, every module named, 2 GB, with the newest line a
``Building`` of a module whose .so is missing (the build hanging now).

    python bench/bench_big.py                      # 10,000 modules, 2048 MB log
    python bench/bench_big.py --modules 10000 --log-mb 2048 --repeat 5
    python bench/bench_big.py --warm-only --repeat 5   # no cold run, page cache left alone

Prints cold (fidoctor caches empty, page cache dropped when permitted), first
(fidoctor caches empty), warm median/min wall times and the warm runs' CPU
(user+sys of the whole process tree: on a shared box the wall says as much about
the neighbours), gather times per section, and whether the newest build was
judged (jit-log-unfinished for it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_diagnose as bd  # noqa: E402

HANGING = "batch_decode_hanging_now_hd128"


def build_box(work: Path, n: int, mb: int, pool: int) -> Path:
    base = work / f"big-{n}"
    ws = base / ".cache" / "flashinfer" / "0.7.2.post1" / "90a"
    ops = ws / "cached_ops"
    (ops / "tmp").mkdir(parents=True, exist_ok=True)
    cudart = bd.build_cudart(work)
    poolws = work / f"pool-{pool}"
    (poolws / "cached_ops" / "tmp").mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    for i in range(pool):
        bd.build_module(poolws, cudart, i)
    for i in range(n):
        name = bd.module_name(i)
        d = ops / name
        if (d / f"{name}.so").exists():
            continue
        d.mkdir(exist_ok=True)
        src = poolws / "cached_ops" / bd.module_name(i % pool)
        shutil.copyfile(src / f"{bd.module_name(i % pool)}.so", d / f"{name}.so")
        shutil.copyfile(src / "build.ninja", d / "build.ninja")
        (ops / "tmp" / f"{name}.lock").touch()
    (ops / HANGING).mkdir(exist_ok=True)
    (ops / HANGING / "build.ninja").write_text(f"ninja_required_version = 1.3\nname = {HANGING}\n")
    (ops / HANGING / f"{HANGING}_k0.cuda.o.d").write_text("x.o: x.cu\n")
    log = ws / "flashinfer_jit.log"
    if not log.exists() or log.stat().st_size < mb << 20:
        block = b"".join(
            f"2026-11-23 05:07:28,595 - INFO - core.py:594 - flashinfer.jit: Building JIT "
            f"module {bd.module_name(i)}; this can take several minutes on first use.\n"
            f"2025-01-01 00:00:00,000 - INFO - flashinfer.jit: Loading JIT ops: "
            f"{bd.module_name(i)}\n2025-01-01 00:00:09,000 - INFO - flashinfer.jit: Finished "
            f"loading JIT ops: {bd.module_name(i)}\n".encode() for i in range(n))
        with open(log, "wb") as f:
            while f.tell() < mb << 20:
                f.write(block)
            f.write(time.strftime("%Y-%m-%d %H:%M:%S,000").encode()
                    + f" - INFO - core.py:594 - flashinfer.jit: Building JIT module {HANGING}; "
                    "this can take several minutes on first use.\n".encode())
    print(f"# box: {n} modules, {log.stat().st_size >> 20} MB log, ready in "
          f"{time.time() - t0:.1f} s", file=sys.stderr)
    return base


def judged(doc) -> bool:
    return any(f["id"] == "jit-log-unfinished" and HANGING in json.dumps(f)
               for f in doc["findings"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--modules", type=int, default=10000)
    ap.add_argument("--log-mb", type=int, default=2048)
    ap.add_argument("--pool", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--work", type=Path, default=Path("/tmp/fidoctor-bench"))
    ap.add_argument("--warm-only", action="store_true",
                    help="no cold run: the page cache is not dropped (a shared box's neighbours "
                    "keep theirs); first and warm runs only")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    base = build_box(args.work, args.modules, args.log_mb, args.pool)
    state = args.work / f"big-state-{args.modules}"
    shutil.rmtree(state, ignore_errors=True)
    dropped = False
    cold, cdoc = float("nan"), None
    if not args.warm_only:
        dropped = bd.drop_caches()
        cold, cdoc = bd.run_once(base, state)
        shutil.rmtree(state, ignore_errors=True)
    first, fdoc = bd.run_once(base, state)
    bd.CPU.clear()
    warm = [bd.run_once(base, state) for _ in range(args.repeat)]
    walls = [w for w, _ in warm]
    doc = warm[-1][1]
    gather = {k: v["elapsed_s"] for k, v in doc["gather"].items()}
    print("modules  log_MB  cold_s  first_s  warm_median_s  warm_min_s  newest_judged(cold/first/warm)")
    print(f"{args.modules:7d}  {args.log_mb:6d}  {cold:6.2f}  {first:7.2f}  "
          f"{statistics.median(walls):13.2f}  {min(walls):10.2f}  "
          f"{judged(cdoc) if cdoc else '-'}/{judged(fdoc)}/{judged(doc)}"
          + ("" if dropped else "  (page cache not dropped)"))
    print(f"warm CPU (user+sys, whole tree) median {statistics.median(bd.CPU):.2f} s, min "
          f"{min(bd.CPU):.2f} s; load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("gather_s(warm):", json.dumps(gather))
    print("gather_s(first):", json.dumps({k: v["elapsed_s"] for k, v in fdoc["gather"].items()}))


if __name__ == "__main__":
    main()
