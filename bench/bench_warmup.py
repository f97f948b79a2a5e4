"""Benchmarks for ``fidoctor warmup`` (figures go in the closing note, not in tests).

  python bench/bench_warmup.py hang [--stall-after 60 15]
      time from the start of a hang (a toolkit whose nvcc blocks forever; the
      stand-in writes a timestamp the moment it starts blocking) to
      fidoctor's verdict, and fidoctor's own CPU while it watched.
  python bench/bench_warmup.py build [--modules single-decode:f16:64,single-decode:bf16:64]
      wall time of warming N real modules: fidoctor (MAX_JOBS from memory),
      one by one (MAX_JOBS=1), FlashInfer's default (no MAX_JOBS: ninja's
      nproc+2); plus fidoctor's own CPU during the real compile.
  python bench/bench_warmup.py parallel [--modules …] [--rounds 2]
      module-parallel warmup against --sequential, each round in a fresh
      cache, alternating which goes first (other load on the box drifts);
      each run against its lower bound max(longest edge, work / cores) + one
      torch+FlashInfer import, from its own .ninja_log files
      (fidoctor.flashinfer.ninjalog); "normalised" divides the two, which
      cancels out other engineers' load on a shared box.
  python bench/bench_warmup.py bounds DIR… [--cores N] [--overhead S]
      the same figures for module dirs (or workspaces: every cached_ops/*)
      that a real run left, e.g. the H200 machine's cache after a cold warmup.

Uses the cached target venv of the tests (tests/warmup_helpers.py).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from warmup_helpers import build_env, hung_toolkit, target_venv  # noqa: E402

from fidoctor.warmup import run_warmup  # noqa: E402
from fidoctor.warmup.specs import parse_spec  # noqa: E402
from fidoctor.warmup.supervisor import CHILD  # noqa: E402


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def bench_hang(stall_after: float) -> dict:
    py = target_venv()
    tmp = Path(tempfile.mkdtemp(prefix="fid-bench-"))
    try:
        tk = hung_toolkit(tmp / "cuda")
        stamp = tmp / "hang-started"
        nvcc = tk / "bin" / "nvcc"
        nvcc.write_text(nvcc.read_text().replace(
            "exec sleep 100000", f"[ -e {stamp} ] || date +%s.%N > {stamp}\nexec sleep 100000"))
        env = build_env(py.parent.parent, tmp / "base", cuda_home=str(tk),
                        extra={"XDG_STATE_HOME": str(tmp / "state")})
        c0, t0 = self_cpu(), time.time()
        res = run_warmup(python=str(py), modules="single-decode:f16:64", arch="9.0a",
                         stall_after=stall_after, env=env)
        t1, c1 = time.time(), self_cpu()
        m = res.modules[0]
        hang = float(stamp.read_text())
        return {"stall_after": stall_after, "status": m.status,
                "cause": m.verdict.data.get("cause") if m.verdict else None,
                "hang_to_verdict_s": round(t1 - hang, 1), "total_s": round(t1 - t0, 1),
                "fidoctor_cpu_s": round(c1 - c0, 2),
                "fidoctor_cpu_pct_of_core": round(100 * (c1 - c0) / (t1 - t0), 2),
                "survivors": m.survivors}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def plain_build(py: Path, env: dict, keys: list) -> float:
    """Compile with FlashInfer alone (no fidoctor): the child script, unsupervised."""
    mods = [dict(key=k, kind=s.kind, dtype=s.dtype, head_dim=s.head_dim)
            for k, s in ((k, parse_spec(k)) for k in keys)]
    t0 = time.time()
    r = subprocess.run([str(py), CHILD, json.dumps({"mode": "build", "modules": mods})],
                       env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(r.stdout[-2000:] + r.stderr[-2000:])
    return time.time() - t0


def bench_build(modules: str) -> dict:
    py = target_venv()
    keys = modules.split(",")
    out = {"modules": keys, "cores": os.cpu_count()}
    tmp = Path(tempfile.mkdtemp(prefix="fid-bench-"))
    try:
        # FlashInfer alone first, so any warm page cache favours it, not fidoctor.
        for label, extra in (("flashinfer_default_s", {}), ("one_by_one_s", {"MAX_JOBS": "1"})):
            e = build_env(py.parent.parent, tmp / label, extra=extra)
            if not extra:
                e.pop("MAX_JOBS", None)  # FlashInfer's default: ninja's nproc+2
            out[label] = round(plain_build(py, e, keys), 1)
        for label, jobs in (("fidoctor_s", None), ("fidoctor_jobs4_s", 4)):
            env = build_env(py.parent.parent, tmp / label,
                            extra={"XDG_STATE_HOME": str(tmp / "s")})
            c0, t0 = self_cpu(), time.time()
            res = run_warmup(python=str(py), modules=modules, arch="9.0a", env=env, jobs=jobs)
            t1, c1 = time.time(), self_cpu()
            assert res.exit_code == 0, [m.to_dict() for m in res.modules]
            out[label] = round(t1 - t0, 1)
            out[label.replace("_s", "_modules_s")] = [round(m.seconds, 1) for m in res.modules]
            if jobs is None:
                out["fidoctor_max_jobs"] = [m.max_jobs for m in res.modules]
                out["fidoctor_peak_rss_gib"] = [round(m.peak_rss / 2**30, 2)
                                                for m in res.modules]
                out["fidoctor_cpu_pct_of_core"] = round(100 * (c1 - c0) / (t1 - t0), 2)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    best = min(out["one_by_one_s"], out["flashinfer_default_s"])
    out["fidoctor_vs_best"] = round(out["fidoctor_s"] / best, 2)
    return out


def import_seconds(py: Path, env: dict) -> float:
    """One torch + FlashInfer import in the target: the part no schedule can hide."""
    t0 = time.time()
    subprocess.run([str(py), "-c", "import torch, flashinfer"], env=env, check=True,
                   capture_output=True)
    return time.time() - t0


def module_dirs(paths: list) -> list:
    """Module dirs named, or every ``cached_ops/<name>`` under the workspaces named."""
    out = []
    for p in map(Path, paths):
        ops = p / "cached_ops"
        if ops.is_dir():
            out += [str(d) for d in sorted(ops.iterdir())
                    if d.is_dir() and (d / ".ninja_log").exists()]
        elif (p / ".ninja_log").exists():
            out.append(str(p))
    return out


def bench_parallel(modules: str, rounds: int) -> dict:
    from fidoctor.flashinfer.ninjalog import bounds, module_edges

    py = target_venv()
    cores = len(os.sched_getaffinity(0))
    out: dict = {"modules": modules.split(","), "cores": cores, "rounds": []}
    tmp = Path(tempfile.mkdtemp(prefix="fid-bench-par-"))
    try:
        for i in range(rounds):
            order = ["parallel", "sequential"] if i % 2 == 0 else ["sequential", "parallel"]
            row: dict = {"order": order}
            for how in order:
                base = tmp / f"r{i}-{how}"
                env = build_env(py.parent.parent, base, extra={"XDG_STATE_HOME": str(base / "s")})
                load0, t0 = os.getloadavg()[0], time.time()
                res = run_warmup(python=str(py), modules=modules, arch="9.0a", env=env,
                                 sequential=how == "sequential")
                wall = time.time() - t0
                # The box's 1-minute load before and after: other engineers' builds share it.
                row[f"{how}_loadavg"] = [round(load0, 1), round(os.getloadavg()[0], 1)]
                assert res.exit_code == 0, [m.to_dict() for m in res.modules]
                row[f"{how}_s"] = round(wall, 1)
                row[f"{how}_peak_rss_gib"] = round(max(m.peak_rss for m in res.modules) / 2**30, 2)
                # Each run against the lower bound of its own edges: on a shared box the
                # same edges cost more when others compile too, and this cancels that out.
                imp = import_seconds(py, env)
                edges = module_edges([m.module_dir for m in res.modules])
                row[f"{how}_bounds"] = bounds(edges, cores, overhead_s=imp)
                row[f"{how}_vs_lower_bound"] = round(
                    wall / row[f"{how}_bounds"]["lower_bound_s"], 3)
            row["parallel_vs_sequential"] = round(row["parallel_s"] / row["sequential_s"], 3)
            row["normalised_parallel_vs_sequential"] = round(
                row["parallel_vs_lower_bound"] / row["sequential_vs_lower_bound"], 3)
            out["rounds"].append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for key in ("parallel_vs_sequential", "normalised_parallel_vs_sequential",
                "parallel_vs_lower_bound", "sequential_vs_lower_bound"):
        vals = sorted(r[key] for r in out["rounds"])
        out[f"{key}_median"] = vals[len(vals) // 2] if len(vals) % 2 else round(
            (vals[len(vals) // 2 - 1] + vals[len(vals) // 2]) / 2, 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["hang", "build", "parallel", "bounds"])
    ap.add_argument("dirs", nargs="*", help="bounds: module dirs or workspaces")
    ap.add_argument("--stall-after", type=float, nargs="+", default=[60.0, 15.0])
    ap.add_argument("--modules", default="single-decode:f16:64,single-decode:bf16:64")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--overhead", type=float, default=0.0,
                    help="bounds: seconds added to both figures (one torch+FlashInfer import)")
    a = ap.parse_args()
    if a.what == "hang":
        for s in a.stall_after:
            print(json.dumps(bench_hang(s)), flush=True)
    elif a.what == "parallel":
        print(json.dumps(bench_parallel(a.modules, a.rounds)), flush=True)
    elif a.what == "bounds":
        from fidoctor.flashinfer.ninjalog import bounds, module_edges

        dirs = module_dirs(a.dirs)
        print(json.dumps(dict(bounds(module_edges(dirs), a.cores, a.overhead),
                              modules=len(dirs))), flush=True)
    else:
        print(json.dumps(bench_build(a.modules)), flush=True)


if __name__ == "__main__":
    main()
