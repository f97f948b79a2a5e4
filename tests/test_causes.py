"""Cause before symptom (fidoctor.causes): linking, order, held-back fixes, every output.

``link`` and ``causal_order`` are pure functions over findings, so these tests
hand them findings shaped exactly as the probes emit them; the probe files'
own tests check the same links on real boxes.
"""

from __future__ import annotations

import json
from importlib import resources

import jsonschema

from fidoctor.causes import causal_order, link
from fidoctor.fixes import FixContext
from fidoctor.fixes._planner import make_plans, render
from fidoctor.model import Finding, Fix
from fidoctor.probes import all_probes, cause_ids

MOD = "batch_decode_x"
WS = "/c/.cache/flashinfer/0.7.2.post1/90a"


def symptom(id_="cache-incomplete-module", module=MOD, severity="error"):
    return Finding(id=id_, severity=severity, title=f"{module} broken",
                   subject=f"{WS}/cached_ops/{module}",
                   data={"module": module, "module_dir": f"{WS}/cached_ops/{module}"},
                   fixes=[Fix("move it aside", ["fidoctor fix --only " + id_],
                              id="quarantine-module")])


def cause(id_="disk-space-low", affects=("*",), severity="warning"):
    return Finding(id=id_, severity=severity, title="the disk is full", subject="/c",
                   data={"affects": list(affects)},
                   fixes=[Fix("free space", ["rm -rf old"], safety="caution")])


def test_symptom_of_an_affected_module_points_to_its_cause_and_holds_its_fix():
    s, c = symptom(), cause()
    link([s, c], ["disk-space-low"])
    assert s.caused_by == "disk-space-low"
    assert any(e.startswith("caused by disk-space-low") for e in s.evidence)
    # the cause's own advice (no automatic fix): its commands, its grade
    assert [f.commands for f in s.fixes] == [["rm -rf old"]] and s.fixes[0].safety == "caution"
    t, c2 = symptom(), cause()
    c2.fixes[0].id = "use-local-workspace"
    link([t, c2], ["disk-space-low"])
    assert t.fixes[0].commands == ["fidoctor fix --only disk-space-low"]
    assert s.data["held_fixes"][0]["id"] == "quarantine-module"


def test_held_step_carries_the_grade_of_the_causes_fix_and_no_empty_command():
    """The held step runs the cause's first fix, so it is graded as that fix is (it was
    "safe" for any fix fidoctor applies, e.g. cuda-home-advice graded caution); a cause that
    offers no fix (build-killed when the jobs already fit its estimate) gets no
    ``fidoctor fix --only`` command, which would only print an empty plan (it was graded
    safe)."""
    t, c = symptom(), cause()
    c.fixes[0].id = "cuda-home-advice"
    link([t, c], ["disk-space-low"])
    assert t.fixes[0].commands == ["fidoctor fix --only disk-space-low"]
    assert t.fixes[0].safety == "caution"
    u, bare = symptom(), cause(id_="build-killed")
    bare.fixes = []
    link([u, bare], ["build-killed"])
    assert u.caused_by == "build-killed" and u.fixes[0].commands == []
    assert "build-killed offers no fix here" in u.fixes[0].description
    assert u.fixes[0].safety != "safe"


def test_unaffected_module_and_non_cause_ids_are_left_alone():
    other, c = symptom(module="norm"), cause(affects=[MOD])
    link([other, c], ["disk-space-low"])
    assert other.caused_by is None and other.fixes[0].id == "quarantine-module"
    s = symptom()
    link([s, cause()], [])  # not declared a cause
    assert s.caused_by is None


def test_affects_by_directory_covers_modules_under_it():
    s = symptom()
    link([s, cause(affects=[WS])], ["disk-space-low"])
    assert s.caused_by == "disk-space-low"
    t = symptom()
    link([t, cause(affects=["/elsewhere"])], ["disk-space-low"])
    assert t.caused_by is None


def test_info_cause_explains_nothing():
    s = symptom()
    link([s, cause(severity="info")], ["disk-space-low"])
    assert s.caused_by is None


def test_symptom_sorts_right_after_its_cause_even_across_severities():
    a, b, c = symptom(), symptom("jit-log-unfinished"), cause(severity="warning")
    other = Finding(id="build-lock-held", severity="error", title="x")
    link([a, b, c, other], ["disk-space-low"])
    order = causal_order([other, a, b, c])  # severity order as diagnose sorts
    assert [f.id for f in order] == ["build-lock-held", "disk-space-low",
                                     "cache-incomplete-module", "jit-log-unfinished"]


def test_fix_plans_the_cause_and_holds_the_symptom(tmp_path):
    s, c = symptom(), cause("cache-on-network-fs")
    c.data["workspace_base"] = str(tmp_path / "local")
    link([s, c], ["cache-on-network-fs"])
    ctx = FixContext(txid="t", state=str(tmp_path / "state"), env={}, python="/x")
    fp = make_plans(causal_order([s, c]), ctx)
    held = [why for f, why in fp.unaddressed if f is s]
    assert held and held[0].startswith("held back: caused by cache-on-network-fs")
    assert "held back" in render(fp, str(tmp_path / "state"))
    assert not [p for p in fp.plans if p.finding_id == "cache-incomplete-module"]


def test_caused_by_is_in_json_schema_and_round_trips():
    s = symptom()
    link([s, cause()], ["disk-space-low"])
    d = s.to_dict()
    assert d["caused_by"] == "disk-space-low"
    assert Finding.from_dict(json.loads(json.dumps(d))).caused_by == "disk-space-low"
    schema = json.loads(resources.files("fidoctor").joinpath(
        "schema/diagnose.schema.json").read_text())
    item = schema["properties"]["findings"]["items"]
    jsonschema.validate(d, item)
    bad = dict(d, caused_by=3)
    try:
        jsonschema.validate(bad, item)
    except jsonschema.ValidationError:
        pass
    else:
        raise AssertionError("caused_by must be a string or null")


def test_text_and_markdown_say_caused_by(box):
    from conftest import diagnose_box

    from fidoctor.render.style import Styler
    from fidoctor.render.text import finding_lines
    from fidoctor.report.markdown import finding_block

    s = symptom()
    link([s, cause()], ["disk-space-low"])
    assert "    caused by disk-space-low (fix that first)" in finding_lines(s, Styler(False))
    assert any("Caused by `disk-space-low`" in line for line in finding_block(1, s))
    empty = diagnose_box(box)  # an empty box: no cause, no symptom (and nothing to check)
    assert not [f for f in empty.findings if f.is_problem or f.caused_by]


def test_cause_probes_declare_themselves():
    ids = set(cause_ids())
    assert ids <= {p.id for p in all_probes()}
    for p in all_probes():
        assert p.cause == (p.id in ids)
