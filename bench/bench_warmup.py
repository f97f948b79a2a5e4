"""Benchmarks for ``fidoctor warmup`` (figures go in the closing note, not in tests).

  python bench/bench_warmup.py hang [--stall-after 60 15]
      time from the start of a hang (a toolkit whose nvcc blocks forever; the
      stand-in writes a timestamp the moment it starts blocking) to
      fidoctor's verdict, and fidoctor's own CPU while it watched.
  python bench/bench_warmup.py build [--modules single-decode:f16:64,single-decode:bf16:64]
      wall time of warming N real modules: fidoctor (MAX_JOBS from memory),
      one by one (MAX_JOBS=1), FlashInfer's default (no MAX_JOBS: ninja's
      nproc+2); plus fidoctor's own CPU during the real compile.

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["hang", "build"])
    ap.add_argument("--stall-after", type=float, nargs="+", default=[60.0, 15.0])
    ap.add_argument("--modules", default="single-decode:f16:64,single-decode:bf16:64")
    a = ap.parse_args()
    if a.what == "hang":
        for s in a.stall_after:
            print(json.dumps(bench_hang(s)), flush=True)
    else:
        print(json.dumps(bench_build(a.modules)), flush=True)


if __name__ == "__main__":
    main()
