"""Benchmark ``fidoctor fleet`` over N nodes' ``diagnose --json`` reports (issue 20: 1,000 < 2 s, < 200 MB).

The reports come from one real snapshot of a real box (a workspace of M gcc-built
modules, gathered by fidoctor), diagnosed once per fault class and written once
per node with the node's own host name and workspace path; every 10th node has
a truncated .so (a fault group), every 37th a module never built (a straggler).

    python bench/bench_fleet.py                    # 1,000 nodes, 40 modules each
    python bench/bench_fleet.py --nodes 1000 --modules 40 --repeat 5

Prints the wall time of the whole CLI (``python -m fidoctor fleet --json DIR``,
interpreter start included) per run, the median, and the peak RSS of the child.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_reports(work: Path, nodes: int, modules: int) -> Path:
    from fidoctor.diagnosis import diagnose
    from fidoctor.snapshot import Snapshot
    from fidoctor.snapshot.context import build_context
    from fidoctor.snapshot.runner import gather_snapshot

    so = work / "mod.so"
    (work / "mod.c").write_text("int f(int x) { return x + 1; }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(so), str(work / "mod.c")], check=True)
    base = work / "base"
    ws = base / ".cache" / "flashinfer" / "0.7.2.post1" / "90a" / "cached_ops"
    (ws / "tmp").mkdir(parents=True)
    for i in range(modules):
        d = ws / f"batch_prefill_hd{i}"
        d.mkdir()
        (d / "build.ninja").write_text(f"name = batch_prefill_hd{i}\ncuda_home = /usr/local/cuda\n")
        shutil.copy(so, d / f"batch_prefill_hd{i}.so")
    env = dict(os.environ, FLASHINFER_WORKSPACE_BASE=str(base), CUDA_HOME="/usr/local/cuda")
    healthy = gather_snapshot(build_context(python=sys.executable, env=env)).to_dict()
    text = json.dumps(healthy)
    out = work / "reports"
    out.mkdir()
    for n in range(1, nodes + 1):
        name = f"gpu{n:04d}"
        d = json.loads(text.replace(str(base), f"/scratch/{name}"))
        d["sections"]["host"]["data"]["hostname"] = name
        mods = d["sections"]["cache"]["data"]["workspaces"][0]["modules"]
        if n % 10 == 0:
            mods[0]["so"]["problem"] = "truncated: the section table lies past the end of the file"
        if n % 37 == 0:
            del mods[-1]
        doc = diagnose(Snapshot.from_dict(d)).to_json()
        (out / f"{name}.json").write_text(json.dumps(doc))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--modules", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        reports = make_reports(Path(tmp), a.nodes, a.modules)
        size = sum(p.stat().st_size for p in reports.iterdir())
        print(f"{a.nodes} reports, {size / 1e6:.1f} MB, made in {time.monotonic() - t0:.1f} s")
        walls = []
        for _ in range(a.repeat):
            t0 = time.monotonic()
            r = subprocess.run([sys.executable, "-m", "fidoctor", "fleet", "--json", str(reports)],
                               capture_output=True, text=True, cwd=ROOT)
            walls.append(time.monotonic() - t0)
            doc = json.loads(r.stdout)
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"exit {r.returncode}; {len(doc['groups'])} groups; "
              f"{len(doc['fleet_findings'])} fleet findings; "
              f"{doc['summary']['answered']} answered")
        print("wall s: " + " ".join(f"{w:.2f}" for w in walls) +
              f"; median {statistics.median(walls):.2f} s; peak RSS {rss:.0f} MB")


if __name__ == "__main__":
    main()
