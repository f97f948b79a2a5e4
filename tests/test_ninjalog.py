"""The lower bound of a build from real ``.ninja_log`` files (fidoctor.flashinfer.ninjalog).

Real ninja (the system's, or the one on PATH) runs two small "modules" whose
edges sleep a known minimum and one link edge each; the log it writes is read
back. Only bounds the sleeps guarantee are asserted (no timing asserts).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from fidoctor.flashinfer.ninjalog import Edge, bounds, list_schedule, module_edges, read_log

NINJA = shutil.which("ninja")
pytestmark = pytest.mark.skipif(NINJA is None, reason="no ninja on PATH")


def module(d: Path, naps: list) -> Path:
    d.mkdir(parents=True)
    rules = "rule nap\n  command = sleep $secs && touch $out\nrule link\n  command = touch $out\n"
    edges = "".join(f"build {d}/k{i}.o: nap\n  secs = {s}\n" for i, s in enumerate(naps))
    objs = " ".join(f"{d}/k{i}.o" for i in range(len(naps)))
    (d / "build.ninja").write_text(rules + edges + f"build {d}/{d.name}.so: link {objs}\n")
    subprocess.run([NINJA, "-C", str(d), "-j", "4"], check=True, capture_output=True)
    return d


def test_bounds_from_real_ninja_logs(tmp_path):
    a = module(tmp_path / "mod_a", [0.3, 0.1])
    b = module(tmp_path / "mod_b", [0.2])
    edges = module_edges([str(a), str(b)])
    assert sorted(e.module for e in edges) == ["mod_a", "mod_a", "mod_a", "mod_b", "mod_b"]
    assert [e.is_link for e in edges].count(True) == 2
    longest = max(e.seconds for e in edges if not e.is_link)
    assert longest >= 0.3
    b1 = bounds(edges, cores=1)
    b4 = bounds(edges, cores=4)
    assert b1["work_s"] >= 0.6 and b1["lower_bound_s"] >= b1["work_s"] - 0.05
    assert b4["lower_bound_s"] >= round(longest, 1) - 0.05
    assert b4["list_schedule_s"] >= b4["lower_bound_s"] - 0.05
    assert bounds(edges, cores=4, overhead_s=5.0)["lower_bound_s"] >= 5.0 + b4["lower_bound_s"] - 0.1


def test_rebuilt_edge_counts_once_and_garbage_is_skipped(tmp_path):
    d = module(tmp_path / "m", [0.1])
    (d / "k0.o").unlink()
    subprocess.run([NINJA, "-C", str(d)], check=True, capture_output=True)
    with open(d / ".ninja_log", "a") as f:
        f.write("garbage line\nx\ty\tz\tw\n")
    edges = read_log(str(d / ".ninja_log"))
    assert len(edges) == 2  # k0.o (its last run) and the link
    assert read_log(str(tmp_path / "absent" / ".ninja_log")) == []


def test_list_schedule_longest_first():
    es = [Edge("a", f"a{i}.o", s) for i, s in enumerate((4.0, 3.0, 3.0, 2.0))]
    assert list_schedule(es, 2) == 6.0
    assert list_schedule(es, 1) == 12.0
    assert list_schedule(es + [Edge("a", "a.so", 0.5)], 4) == 4.5


def test_schedule_simulator_replays_the_h200_run(tmp_path):
    """bench/sim_warmup.py replays the H200's real edges through warmup's rules (its figures
    go in the notes, not here): every policy's makespan is at least the lower bound, and the
    admissions it reports name all six modules, the FA3 twins first."""
    import json as _json
    import subprocess as _sp
    import sys as _sys

    root = Path(__file__).resolve().parent.parent
    out = _sp.run([_sys.executable, str(root / "bench" / "sim_warmup.py"), "--runs", "3",
                   "--json"], capture_output=True, text=True, timeout=120, check=True)
    doc = _json.loads(out.stdout)
    for durations in ("logged", "quiet"):
        r = doc[durations]
        for policy in ("greedy", "split", "now"):
            assert r[f"{policy}_s"] >= r["lower_bound_s"]
            adm = r[f"{policy}_admissions"]
            assert len(adm) == 6 and {a[0] for a in adm[:2]} == {"fa3-bf16", "fa3-f16"}
        assert [a[2] for a in r["now_admissions"][:2]] == [8, 8]   # the twins' even split
    for arg, why in ((tmp_path / "none", "not a directory"), (tmp_path, "no .ninja_log")):
        bad = _sp.run([_sys.executable, str(root / "bench" / "sim_warmup.py"), str(arg)],
                      capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and why in bad.stderr, bad.stderr
