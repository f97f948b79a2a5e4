"""Figures for build-memory-thrash: a real FlashInfer build thrashing in a real 200 MB memcg.

  FIDOCTOR_TEST_TARGET_PYTHON=… python bench/bench_thrash.py [RUNS] [WATCH_S]

The rig of tests/test_build_memory_thrash.py (toolchain pages evicted with posix_fadvise,
a server in a 200 MB child cgroup running ninja -j1 on a FlashInfer 0.7.2.post1 decode
module with the real nvcc), RUNS times (default 3). Per run: seconds from ninja's start
until the cgroup thrashes (2 s at the limit, ≥5,000 limit hits/s, no OOM kill), the limit
hits/s and the compilers' major faults/s fidoctor saw, seconds ``fidoctor diagnose --pid
SERVER --json`` took to name it (a child process, as a user runs it), then how the thrash
went on for up to WATCH_S seconds (default 60) without help: OOM-killed, finished, or
still thrashing. One JSON object per run, then the medians.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE.parent))

from _pytest.outcomes import Skipped  # noqa: E402
from memcg_helpers import (  # noqa: E402
    CUDA_HOME,
    counters,
    evict_toolchain,
    memcg_dir,
    start_server,
    wait_for_thrash,
)
from ninja_helpers import fi_env, flashinfer_module  # noqa: E402
from proc_helpers import Procs, set_subreaper  # noqa: E402


def one(watch_s: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="fidoctor-bench-thrash-") as d:
        procs = Procs(Path(d))
        gen = memcg_dir(procs)
        cg = next(gen)
        try:
            mod = flashinfer_module(Path(d) / "b", build=False, launch=False)
            env = fi_env(Path(d) / "b", CUDA_HOME)
            left = evict_toolchain()
            server = start_server(procs, cg, env, "cold", mod)
            server.stdout.readline()
            t0 = time.monotonic()
            try:
                seen = wait_for_thrash(cg, server, left=left)
            except Skipped as e:
                return {"thrashed": False, "why": str(e)}
            row = {"thrashed": True, "thrash_after_s": round(time.monotonic() - t0, 1),
                   "hits_per_s_seen": seen["hits_per_s"]}
            t1 = time.monotonic()
            r = subprocess.run([sys.executable, "-m", "fidoctor", "diagnose", "--pid",
                                str(server.pid), "--json"], capture_output=True, text=True,
                               timeout=120)
            row["diagnose_s"] = round(time.monotonic() - t1, 2)
            found = [f for f in json.loads(r.stdout)["findings"]
                     if f["id"] == "build-memory-thrash"]
            row["fired"] = bool(found)
            if found:
                data = found[0]["data"]
                row.update(limit_hits_per_s=data["limit_hits_per_s"],
                           majflt_per_s=data["majflt_per_s"], usage=data["usage"])
            stuck = [f["severity"] + ": " + f["title"] for f in json.loads(r.stdout)["findings"]
                     if f["id"] == "build-process-stuck"]
            row["build_process_stuck"] = stuck
            a, ta = counters(cg), time.monotonic()
            end = "still thrashing"
            while time.monotonic() - t0 < watch_s:
                time.sleep(1)
                if counters(cg)["oom_kill"]:
                    end = "OOM-killed"
                    break
                if server.poll() is not None or not _compiling(cg):
                    end = "build ended"
                    break
            b, tb = counters(cg), time.monotonic()
            row.update(outcome=end, outcome_after_s=round(time.monotonic() - t0, 1),
                       hits_per_s_after=round((b["hits"] - a["hits"]) / (tb - ta)))
            return row
        finally:
            try:
                next(gen)
            except StopIteration:
                pass


def _compiling(cg: Path) -> bool:
    for pid in (cg / "cgroup.procs").read_text().split():
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() in ("cudafe++", "cicc", "cc1plus",
                                                            "ptxas", "nvcc", "ninja"):
                return True
        except OSError:
            continue
    return False


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    watch = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
    set_subreaper(True)
    rows = []
    for _ in range(runs):
        row = one(watch)
        print(json.dumps(row), flush=True)
        rows.append(row)
    ok = [r for r in rows if r.get("fired")]
    if ok:
        print(json.dumps({k: statistics.median(r[k] for r in ok) for k in
                          ("thrash_after_s", "diagnose_s", "limit_hits_per_s", "majflt_per_s")}
                         | {"runs": runs, "thrashed": sum(r["thrashed"] for r in rows),
                            "fired": len(ok)}))


if __name__ == "__main__":
    main()
