"""On the H200 (bench/h200/live.sh): the default set built cold under ``fidoctor run``.

Reports per module the ETA fidoctor printed at build start against the build's real time,
the delay from the first compiler process to build-start and to the first progress line,
the deadline warning (``--deadline 100=startupProbe``), and fidoctor's own CPU (its process
and the output tap) while the builds ran and over 20 s of serving afterwards.
"""

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from bench_live import cpu_of, first_compiler, ours  # noqa: E402

out = Path(os.environ.get("OUT", "/tmp/out"))
ev_path = out / "run.jsonl"


def events():
    try:
        return [json.loads(ln) for ln in ev_path.read_text().splitlines() if ln.strip()]
    except OSError:
        return []


p = subprocess.Popen([sys.executable, "-m", "fidoctor", "run", "--events", str(ev_path),
                      "--deadline", "100=startupProbe", "--",
                      sys.executable, str(HERE / "default_set_server.py")],
                     stdout=open(out / "server.out", "wb"),  # noqa: SIM115
                     stderr=open(out / "fidoctor.err", "wb"))  # noqa: SIM115
while not events():
    time.sleep(0.05)
first_cc, samples = {}, []
while p.poll() is None:
    evs = events()
    if any(e["event"] == "build-end" for e in evs) and \
            sum(e["event"] == "build-end" for e in evs) >= 6:
        break
    # the first compiler of each build: the earliest nvcc/cicc/cudafe++ below its ninja
    for e in evs:
        if e["event"] == "build-start" and e["module"] not in first_cc:
            t = first_compiler(e["pid"])
            if t:
                first_cc[e["module"]] = t
    samples.append((time.time(), sum(cpu_of(x) for x in ours(p.pid))))
    time.sleep(0.05)
t_end, cpu_end = time.time(), sum(cpu_of(x) for x in ours(p.pid))
time.sleep(20)
t_idle, cpu_idle = time.time(), sum(cpu_of(x) for x in ours(p.pid))
if p.poll() is None:
    os.kill(p.pid, signal.SIGTERM)
p.wait(timeout=60)
evs = events()
starts = {e["module"]: e for e in evs if e["event"] == "build-start"}
ends = {e["module"]: e for e in evs if e["event"] == "build-end"}
progress = {}
for e in evs:
    if e["event"] == "progress" and e["module"] not in progress:
        progress[e["module"]] = e
rows = []
for m, s in starts.items():
    end = ends.get(m, {})
    actual = end.get("seconds")
    rows.append({"module": s["label"], "eta_s": round(s["eta_s"], 1) if s.get("eta_s") else None,
                 "actual_s": actual,
                 "error": round((s["eta_s"] - actual) / actual, 3) if actual and s.get("eta_s") else None,
                 "build_start_after_compiler_s": round(s["t"] - first_cc[m], 2) if m in first_cc else None,
                 "first_progress_after_compiler_s": round(progress[m]["t"] - first_cc[m], 2)
                 if m in first_cc and m in progress else None})
first_start = min(e["t"] for e in evs if e["event"] == "build-start")
cpu_first = next(c for t, c in samples if t >= first_start)
deadline = [e for e in evs if e["event"] == "deadline"]
summary = {
    "rows": rows,
    "median_abs_eta_error": statistics.median(abs(r["error"]) for r in rows if r["error"] is not None),
    "fidoctor_cpu_during_builds_pct": round(100 * (cpu_end - cpu_first) / (t_end - first_start), 2),
    "fidoctor_cpu_idle_pct": round(100 * (cpu_idle - cpu_end) / (t_idle - t_end), 2),
    "deadline_warnings": [{"module": e["module"], "after_build_start_s":
                           round(e["t"] - starts[e["module"]]["t"], 2), "text": e["text"]}
                          for e in deadline],
    "stalls": sum(e["event"] == "stall" for e in evs),
    "exit": p.returncode, "cores": os.cpu_count(),
}
print(json.dumps(summary, indent=1))
(out / "summary.json").write_text(json.dumps(summary, indent=1))
