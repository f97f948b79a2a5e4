"""Benchmarks for ``fidoctor run`` / ``watch`` (figures go in the closing note, not in tests).

  python bench/bench_live.py [build] [hang] [lock] [eta]

  build  a real cold FlashInfer build (tests/live_helpers.py's stand-in server, sm_90a) under
         ``fidoctor run``: delay from the first compiler process to fidoctor's build-start
         and first progress line; fidoctor's own CPU (its process + the output tap) during
         the build and over 30 s of the server idling afterwards.
  hang   defaults (--stall-after 30): a toolkit whose nvcc blocks forever (stand-in for a hung
         nvcc): time from the moment the "nvcc" starts blocking to the printed diagnosis.
  lock   defaults (--lock-idle-after 8): a real flock held by an idle process: time from the
         server starting to wait (its "loading" line) to the printed diagnosis.
  eta    the ETA table against every measured module wall it knows (eta.MEASURED, the H200
         warmup's per-module walls): per-module error and the median.
  reeta  the mid-build re-estimate (eta.reestimate): (1) the H200's six real .ninja_logs
         replayed after each finished object: the predicted end's error where a range is said,
         how often the range holds the real end, how often only a floor is said; (2) a real
         cold CPU build (MAX_JOBS=2, --progress-every 2) under ``fidoctor run``: the first
         re-estimated end against the real end, beside the start estimate's error.

Uses the cached target venv of the tests (tests/warmup_helpers.py). Each run prints one JSON
object per measurement and a summary.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE.parent))

import psutil  # noqa: E402
from live_helpers import events_of, module_name, standin, standin_env, workspace  # noqa: E402
from warmup_helpers import hold_flock, hung_toolkit, kill_and_wait  # noqa: E402

from fidoctor.flashinfer import eta  # noqa: E402


def cpu_of(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            rest = f.read().rsplit(b")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def ours(pid: int) -> List[int]:
    """fidoctor run's own process and its tap (not the server: it is in another session)."""
    out = [pid]
    try:
        for c in psutil.Process(pid).children():
            if "tap.py" in " ".join(c.cmdline()):
                out.append(c.pid)
    except psutil.Error:
        pass
    return out


class Lines(threading.Thread):
    """Read the server's stdout (via fidoctor's tap) with arrival times."""

    def __init__(self, stream) -> None:
        super().__init__(daemon=True)
        self.stream, self.seen = stream, []

    def run(self) -> None:
        for raw in iter(self.stream.readline, b""):
            self.seen.append((time.time(), raw.decode("utf-8", "replace")))

    def when(self, text: str) -> Optional[float]:
        return next((t for t, ln in self.seen if text in ln), None)


def start(args: List[str], env: Dict[str, str], tmp: Path) -> Tuple[subprocess.Popen, Lines]:
    p = subprocess.Popen([sys.executable, "-m", "fidoctor", "run", "--events",
                          str(tmp / "ev.jsonl"), *args], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, cwd=tmp)
    lines = Lines(p.stdout)
    lines.start()
    return p, lines


def wait_event(tmp: Path, kind: str, p: subprocess.Popen, timeout: float = 900) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for e in events_of(tmp / "ev.jsonl"):
            if e["event"] == kind:
                return e
        if p.poll() is not None:
            raise SystemExit(f"fidoctor run ended before {kind}: {events_of(tmp / 'ev.jsonl')}")
        time.sleep(0.05)
    raise SystemExit(f"no {kind} within {timeout} s")


def first_compiler(root: int, names=("nvcc", "cicc", "cudafe++", "sleep")) -> Optional[float]:
    try:
        procs = psutil.Process(root).children(recursive=True)
    except psutil.Error:
        return None
    times = [c.create_time() for c in procs if c.name() in names]
    return min(times) if times else None


def bench_build(tmp: Path) -> dict:
    env = standin_env(tmp / "base", extra={"XDG_CACHE_HOME": str(tmp / "xdg")})
    p, _lines = start(["--", *standin(tmp, "now", "serve")], env, tmp)
    server = wait_event(tmp, "start", p)["pid"]
    first_cc = None
    while first_cc is None and p.poll() is None:
        first_cc = first_compiler(server)
        time.sleep(0.05)
    bs = wait_event(tmp, "build-start", p)
    cpu0, t0 = sum(cpu_of(x) for x in ours(p.pid)), time.time()
    prog = wait_event(tmp, "progress", p)
    end = wait_event(tmp, "build-end", p)
    cpu1, t1 = sum(cpu_of(x) for x in ours(p.pid)), time.time()
    time.sleep(30)
    cpu2, t2 = sum(cpu_of(x) for x in ours(p.pid)), time.time()
    os.kill(p.pid, signal.SIGTERM)
    p.wait(timeout=60)
    actual = end["seconds"]
    return {"what": "cold build", "module": module_name(64),
            "build_start_after_compiler_s": round(bs["t"] - first_cc, 2) if first_cc else None,
            "first_progress_after_compiler_s": round(prog["t"] - first_cc, 2) if first_cc else None,
            "build_s": actual, "eta_s": bs.get("eta_s"), "eta_source": bs.get("eta_source"),
            "eta_error": round((bs["eta_s"] - actual) / actual, 3) if bs.get("eta_s") else None,
            "fidoctor_cpu_during_build_pct": round(100 * (cpu1 - cpu0) / (t1 - t0), 2),
            "fidoctor_cpu_idle_pct": round(100 * (cpu2 - cpu1) / (t2 - t1), 2),
            "cores": os.cpu_count()}


def bench_hang(tmp: Path) -> dict:
    tk = hung_toolkit(tmp / "tk")
    env = standin_env(tmp / "base", cuda_home=str(tk))
    p, _ = start(["--on-stall", "exit", "--", *standin(tmp, "now", 0)], env, tmp)
    server = wait_event(tmp, "start", p)["pid"]
    hung = None
    while hung is None and p.poll() is None:
        hung = first_compiler(server, ("sleep",))   # the stand-in nvcc execs sleep and blocks
        time.sleep(0.05)
    diag = wait_event(tmp, "diagnosis", p, timeout=300)
    stall = wait_event(tmp, "stall", p)
    p.wait(timeout=120)
    return {"what": "hung nvcc, defaults", "hang_to_stall_s": round(stall["t"] - hung, 1),
            "hang_to_cause_s": round(diag["t"] - hung, 1),
            "findings": [f["id"] for f in diag["findings"]], "exit": p.returncode}


def bench_lock(tmp: Path) -> dict:
    base = tmp / "base"
    holder = hold_flock(workspace(base) / "cached_ops" / "tmp" / f"{module_name(64)}.lock")
    try:
        env = standin_env(base)
        p, lines = start(["--on-stall", "exit", "--", *standin(tmp, "now", 0)], env, tmp)
        diag = wait_event(tmp, "diagnosis", p, timeout=300)
        wait = wait_event(tmp, "lock-wait", p)
        p.wait(timeout=120)
    finally:
        kill_and_wait(holder)
    began = lines.when("server: loading")
    return {"what": "lock held by an idle process, defaults",
            "wait_to_reported_s": round(wait["t"] - began, 1) if began else None,
            "wait_to_cause_s": round(diag["t"] - began, 1) if began else None,
            "findings": [f["id"] for f in diag["findings"]], "exit": p.returncode}


def bench_eta() -> dict:
    rows = []
    for (kind, arch, cores, jobs), (wall, src) in eta.MEASURED.items():
        est = eta.estimate(kind, arch=arch, cores=cores, jobs=jobs)
        rows.append({"kind": kind, "cores": cores, "jobs": jobs, "measured_s": wall,
                     "eta_s": round(est.seconds, 1), "error": round((est.seconds - wall) / wall, 3),
                     "source": src})
    # the H200 default set (fidoctor warmup, MAX_JOBS 16): bf16 then f16 per kind
    h200 = {"decode": (10.9, 11.7), "prefill-fa2": (29.3, 28.8), "prefill-fa3": (69.5, 88.5)}
    default_set = []
    for kind, walls in h200.items():
        est = eta.estimate(kind, arch="90a", cores=16, jobs=16)
        default_set += [abs(est.seconds - w) / w for w in walls]
        rows += [{"kind": kind, "cores": 16, "jobs": 16, "measured_s": w,
                  "eta_s": round(est.seconds, 1), "error": round((est.seconds - w) / w, 3),
                  "source": "H200 default-set warmup (in-sample: the seeds come from its .ninja_log)"}
                 for w in walls]
    return {"what": "eta table", "rows": rows,
            "h200_default_set_median_abs_error": round(statistics.median(default_set), 3)}


def bench_reeta(tmp: Path) -> dict:
    logs = HERE.parent / "tests" / "fixtures" / "real-h200" / "ninja_logs"
    errs, held, floors, said = [], 0, 0, 0
    for log in sorted(logs.iterdir()):
        edges = [(e.start_ms / 1000, e.end_ms / 1000) for e in eta.read_ninja_log(str(log))
                 if not e.output.endswith(".so")]
        end = max(b for _, b in edges)
        jobs = max(sum(1 for a, b in edges if a <= t < b) for t, _ in edges)
        for t in sorted({b for _, b in edges})[:-1]:
            t += 0.5
            fin = [b - a for a, b in edges if b <= t]
            if len(fin) == len(edges):
                continue
            re = eta.reestimate(fin, [t - a for a, b in edges if a <= t < b], len(edges), jobs)
            if re is None or re.high is None:
                floors += 1
                continue
            said += 1
            errs.append((t + re.left - end) / end)
            held += t + re.low <= end <= t + re.high
    env = standin_env(tmp / "base", extra={"XDG_CACHE_HOME": str(tmp / "xdg"), "MAX_JOBS": "2"})
    p, _lines = start(["--progress-every", "2", "--", *standin(tmp, "now", 0)], env, tmp)
    end_ev = wait_event(tmp, "build-end", p)
    p.wait(timeout=120)
    evs = events_of(tmp / "ev.jsonl")
    bs = next(e for e in evs if e["event"] == "build-start")
    first = next((e for e in evs if e["event"] == "progress"
                  and e.get("eta_basis") == "ninja-progress" and e.get("eta_high_s")), None)
    real = end_ev["seconds"]
    live = None
    if first:
        at = first["elapsed_s"]
        live = {"at_s": at, "done": first["done"], "predicted_end_s": round(at + first["eta_left_s"], 1),
                "range_s": [round(at + first["eta_low_s"], 1), round(at + first["eta_high_s"], 1)],
                "end_error": round((at + first["eta_left_s"] - real) / real, 3)}
    return {"what": "mid-build re-estimate",
            "h200_replay": {"points_with_range": said, "points_floor_only": floors,
                            "range_holds_end": held,
                            "median_abs_end_error": round(statistics.median(map(abs, errs)), 3)
                            if errs else None},
            "cpu_build": {"build_s": real, "start_eta_s": bs.get("eta_s"),
                          "start_eta_error": round((bs["eta_s"] - real) / real, 3)
                          if bs.get("eta_s") else None, "first_reestimate": live,
                          "cores": os.cpu_count()}}


def main(argv: List[str]) -> None:
    which = argv or ["eta", "build", "hang", "lock"]
    results = []
    for name in which:
        with tempfile.TemporaryDirectory(prefix=f"bench-live-{name}-") as d:
            r = bench_eta() if name == "eta" else globals()[f"bench_{name}"](Path(d))
        print(json.dumps(r), flush=True)
        results.append(r)


if __name__ == "__main__":
    main(sys.argv[1:])
