"""Conformance: every fix module has the registry's shape, and every fix id a probe offers exists."""

from __future__ import annotations

import re
from pathlib import Path

import fidoctor.probes
from fidoctor.fixes import all_fixes, candidates
from fidoctor.model import SAFETY, Finding, Fix


def test_every_fix_module_is_documented_and_graded():
    fixes = all_fixes()
    assert "quarantine-module" in fixes
    for fid, fx in fixes.items():
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", fid), fid
        assert fx.safety in SAFETY, fid
        assert fx.doc.startswith(f"{fid}:"), f"{fid}: docstring must start with its id"
        for part in ("What:", "Why", "Safety:"):
            assert part in fx.doc, f"{fid}: docstring lacks {part}"


def test_every_fix_id_a_probe_offers_is_implemented():
    src = Path(fidoctor.probes.__file__).parent
    offered = set()
    for f in src.glob("*.py"):
        offered |= set(re.findall(r'\bid="([a-z0-9-]+)"', f.read_text()))
    assert offered, "no fix ids found in the probes"
    missing = offered - set(all_fixes())
    assert not missing, f"probes offer fixes fidoctor fix cannot apply: {sorted(missing)}"


def test_candidates_order_use_then_owners_then_probe_order():
    f = Finding(id="cuda-toolkit-unusable", severity="error", title="t",
                fixes=[Fix("a", id="quarantine-module"), Fix("b")])
    assert candidates(f) == ["cuda-home-advice", "quarantine-module"]
    g = Finding(id="cudart-missing-symbol", severity="error", title="t",
                fixes=[Fix("a", id="preload-cudart"), Fix("b", id="replace-pip-cudart")])
    assert candidates(g) == ["preload-cudart", "replace-pip-cudart"]
    assert candidates(g, ["replace-pip-cudart", "not-offered"]) == ["replace-pip-cudart",
                                                                   "preload-cudart"]


def test_planner_merges_the_same_tree_from_two_findings_and_keeps_distinct_ones(tmp_path):
    import sys

    from fidoctor.fixes import FixContext
    from fidoctor.fixes._planner import make_plans

    def stuck(fid, pids):
        return Finding(id=fid, severity="error", title="t", subject=f"{fid}{pids}",
                       fixes=[Fix("t", id="terminate-build-tree")],
                       data={"pids": pids, "pgids": [], "create_times": {},
                             "module_dir": str(tmp_path / "gone")})

    ctx = FixContext(txid="t", state=str(tmp_path / "state"), env={}, python=sys.executable)
    fp = make_plans([stuck("build-process-stuck", [11, 12]), stuck("build-lock-held", [11, 12]),
                     stuck("build-process-stuck", [13])], ctx)
    kinds = [(s.kind, s.pids) for s in fp.steps]
    assert kinds == [("terminate", [11, 12]), ("terminate", [13])]
    assert any("already planned" in n for n in fp.plans[1].notes)
