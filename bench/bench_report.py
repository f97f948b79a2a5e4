"""Benchmark ``fidoctor report`` against ``fidoctor diagnose`` on the 1,000-module box.

Reuses bench_diagnose.py's box (distinct gcc-built module .so files linked
against a gcc-built versioned libcudart, plus a large JIT log). Measures:

- whole process: ``fidoctor report -o R --attach-snapshot`` vs ``fidoctor diagnose --json``
  (median wall time of --repeat runs, warm fact cache);
- in process, on one gathered snapshot: diagnose, redaction of the snapshot
  alone, and ``report.build`` (redact + render + replay check);
- sizes: report bytes, attached snapshot bytes.

    python bench/bench_report.py                 # 1,000 modules, 100 MB log
    python bench/bench_report.py --modules 250 --log-mb 10
    python bench/bench_report.py --from SNAP.json --repeat 5   # a saved snapshot (unredacted)

``--from``: the redaction and the snapshot file on a snapshot saved with ``fidoctor snapshot
--no-redact -o SNAP.json`` (bench_big.py's 10,000-module box gives a 65 MB one): the CPU
(user+sys) of ``fidoctor report --from SNAP.json -o R --attach-snapshot`` as a child, and in
process the redaction pass (learn + tree) and the snapshot file's text, each run N times:
median, min and max. PYTHONPATH=/some/old/checkout times an older fidoctor the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_diagnose import build_box  # noqa: E402


def wall(argv, env) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=env, capture_output=True)
    if p.returncode not in (0, 1):
        raise SystemExit(f"{argv} failed ({p.returncode}): {p.stderr.decode()[-2000:]}")
    return time.perf_counter() - t0


def median_s(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def spread(xs) -> str:
    return f"median {statistics.median(xs):.2f} s (min {min(xs):.2f}, max {max(xs):.2f})"


def from_snapshot(path: Path, repeat: int) -> None:
    """CPU of ``report --from`` (a child each run) and the in-process redaction and write."""
    import resource

    import fidoctor
    from fidoctor.report import redacted_snapshot
    from fidoctor.snapshot import Snapshot

    cpu = []
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, XDG_CACHE_HOME=tmp, XDG_STATE_HOME=tmp, NO_COLOR="1")
        for _ in range(repeat):
            ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            # cwd: -m puts it first on sys.path, before PYTHONPATH's older fidoctor
            subprocess.run([sys.executable, "-m", "fidoctor", "report", "--from", str(path),
                            "-o", str(Path(tmp) / "r.md"), "--attach-snapshot"], env=env,
                           cwd=tmp, check=True, capture_output=True)
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu.append(ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime)
    snap = Snapshot.load(str(path))
    red, write = [], []
    for _ in range(repeat):
        t0 = time.process_time()
        rsnap, _summary = redacted_snapshot(snap)
        red.append(time.process_time() - t0)
        t0 = time.process_time()
        try:
            from fidoctor.snapshot import dumps
            text = dumps(rsnap.to_dict())
        except ImportError:  # an older fidoctor
            text = json.dumps(rsnap.to_dict(), indent=1, sort_keys=True) + "\n"
        write.append(time.process_time() - t0)
    print(f"fidoctor {os.path.dirname(fidoctor.__file__)}; {path} ({path.stat().st_size >> 20} MB), "
          f"{repeat} runs, load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"report --from -o R --attach-snapshot, CPU (user+sys): {spread(cpu)}")
    print(f"redaction (learn + tree), CPU:                      {spread(red)}")
    print(f"snapshot file text ({len(text) >> 20} MB), CPU:                 {spread(write)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--from", dest="from_file", type=Path,
                    help="time the redaction and the snapshot file on this saved snapshot")
    ap.add_argument("--modules", type=int, default=1000)
    ap.add_argument("--log-mb", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--work", type=Path, default=Path("/tmp/fidoctor-bench"))
    a = ap.parse_args()
    if a.from_file:
        from_snapshot(a.from_file, a.repeat)
        return
    base = build_box(a.work, a.modules, a.log_mb)
    state = a.work / f"state-{a.modules}"
    env = dict(os.environ, FLASHINFER_WORKSPACE_BASE=str(base), XDG_CACHE_HOME=str(state),
               XDG_STATE_HOME=str(state), NO_COLOR="1")
    py = [sys.executable, "-m", "fidoctor"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.md"
        wall(py + ["diagnose", "--json"], env)  # warm the ELF fact cache once
        diag_s = statistics.median(wall(py + ["diagnose", "--json"], env) for _ in range(a.repeat))
        rep_s = statistics.median(wall(py + ["report", "-o", str(out), "--attach-snapshot"], env)
                                  for _ in range(a.repeat))
        md_bytes = out.stat().st_size
        snap_bytes = (Path(tmp) / "r.snapshot.json").stat().st_size

    os.environ.update(env)
    from fidoctor.diagnosis import diagnose
    from fidoctor.report import build
    from fidoctor.report.redact import Redactor
    from fidoctor.snapshot.context import build_context
    from fidoctor.snapshot.runner import gather_snapshot

    snap = gather_snapshot(build_context(env=env))
    raw = snap.to_dict()
    strings = len(json.dumps(raw))
    d_s = median_s(lambda: diagnose(snap), a.repeat)
    r_s = median_s(lambda: Redactor().learn(raw).learn_local(env).tree(raw), a.repeat)
    b_s = median_s(lambda: build(snap, local_env=env), a.repeat)
    rep = build(snap, local_env=env)
    print(json.dumps({
        "modules": a.modules, "log_mb": a.log_mb, "repeat": a.repeat,
        "cpu_count": os.cpu_count(),
        "process_diagnose_json_s": round(diag_s, 3),
        "process_report_attach_s": round(rep_s, 3),
        "inproc_diagnose_s": round(d_s, 4),
        "inproc_redact_snapshot_s": round(r_s, 4),
        "inproc_build_report_s": round(b_s, 4),
        "snapshot_json_chars": strings,
        "report_bytes": md_bytes, "attached_snapshot_bytes": snap_bytes,
        "findings": len(rep.diagnosis.findings), "redaction": rep.redaction,
        "replay_mismatch": len(rep.replay_mismatch),
    }, indent=1))


if __name__ == "__main__":
    main()
