"""The core probes: each fires on a real broken box and stays quiet on a healthy one,
and every verdict survives a snapshot → file → replay round trip."""

from __future__ import annotations

import json
import time

from conftest import DECODE, FA2, FA3, diagnose_box, ids, log_line, snapshot_of

from fidoctor.diagnosis import diagnose
from fidoctor.snapshot import Snapshot


def by_id(diag, id_):
    return [f for f in diag.findings if f.id == id_]


def test_healthy_box_has_no_problems(box):
    ws = box.workspace()
    now = time.time()
    for name in (DECODE, FA2, FA3):
        box.module(ws, name)
    box.log(ws, [log_line("new", "building", n, now - 600) for n in (DECODE, FA2, FA3)])
    diag = diagnose_box(box)
    assert [f for f in diag.findings if f.is_problem] == []
    assert diag.exit_code == 0


def test_incomplete_module_fires_per_module_with_severity_by_damage(box):
    ws = box.workspace()
    box.module(ws, DECODE)
    box.module(ws, FA2, so="missing", objects=2, depfiles=1, ninja_lock=True)
    box.module(ws, FA3, so="truncated")
    diag = diagnose_box(box)
    found = {f.data["module"]: f for f in by_id(diag, "cache-incomplete-module")}
    assert set(found) == {FA2, FA3}
    assert found[FA3].severity == "error" and "truncated" in found[FA3].title
    assert found[FA2].severity == "warning"
    assert any("1 leftover depfile(s)" in e and "k0.cuda.o.d" in e for e in found[FA2].evidence)
    assert found[FA2].fixes[0].id == "quarantine-module"
    assert found[FA2].data["module_dir"] == str(ws / "cached_ops" / FA2)
    assert diag.exit_code == 1


def test_dir_without_build_files_is_not_incomplete(box):
    ws = box.workspace()
    (ws / "cached_ops" / "empty_dir").mkdir()
    assert "cache-incomplete-module" not in ids(diagnose_box(box))


def test_unfinished_old_format(box):
    ws = box.workspace(version=None, arch="90")
    now = time.time()
    box.module(ws, DECODE)
    box.log(ws, [
        log_line("old", "loading", DECODE, now - 300),
        log_line("old", "finished", DECODE, now - 290),
        log_line("old", "loading", FA3, now - 150),  # far from a unit boundary: "2 min"
        log_line("old", "loading", DECODE, now - 100),
        log_line("old", "finished", DECODE, now - 99),
    ])
    diag = diagnose_box(box)
    found = by_id(diag, "jit-log-unfinished")
    assert [f.data["module"] for f in found] == [FA3]
    assert found[0].severity == "error"
    assert 148 <= found[0].data["age_s"] <= 152
    assert "2 min" in found[0].title


def test_unfinished_07_needs_a_missing_so(box):
    ws = box.workspace()
    now = time.time()
    box.module(ws, DECODE)  # built fine
    box.module(ws, FA3, so="missing", objects=2)  # killed
    box.log(ws, [log_line("new", "building", n, now - 60) for n in (DECODE, FA3)])
    found = by_id(diagnose_box(box), "jit-log-unfinished")
    assert [f.data["module"] for f in found] == [FA3]


def test_flashinfer_absent_is_info_and_not_checked(box):
    """Nothing about the JIT was judged: the finding is info, the verdict "not checked"
    (exit 2, README's command table), never healthy. Before: exit 0, "healthy for what was
    judged" under a finding saying there was nothing to diagnose."""
    diag = diagnose_box(box)
    assert ids(diag) == ["flashinfer-not-installed"]
    assert diag.exit_code == 2
    assert "no FlashInfer" in (diag.unchecked or "") and diag.verdict.startswith("not checked")


def test_broken_interpreter_is_a_finding(box, tmp_path):
    from target_helpers import misbehaving_python

    bad = misbehaving_python(tmp_path / "python", "import sys\n"
                             "sys.stderr.write('Fatal Python error: init_fs_encoding\\n')\n"
                             "sys.stderr.flush()\nimport os\nos._exit(1)\n")
    diag = diagnose_box(box, python=str(bad))
    f = by_id(diag, "target-python-unusable")[0]
    assert "init_fs_encoding" in " ".join(f.evidence)
    assert "flashinfer-not-installed" not in ids(diag)


def test_round_trip_gives_identical_findings(box, tmp_path):
    ws = box.workspace()
    now = time.time()
    box.module(ws, DECODE)
    box.module(ws, FA3, so="text")
    box.module(ws, FA2, so="missing")
    box.log(ws, [log_line("new", "building", FA2, now - 30)])
    snap = snapshot_of(box)
    path = tmp_path / "snap.json"
    snap.save(str(path))
    replayed = diagnose(Snapshot.load(str(path)))
    original = diagnose(snap)
    assert [f.to_dict() for f in replayed.findings] == [f.to_dict() for f in original.findings]
    assert {"cache-incomplete-module", "jit-log-unfinished"} <= set(ids(original))
    json.dumps(original.to_json())  # serialisable


def test_missing_section_makes_probes_inconclusive(box):
    snap = snapshot_of(box)
    snap.sections["cache"].status = "timeout"
    snap.sections["cache"].error = "gave up after 10 s"
    diag = diagnose(snap)
    reasons = {i.probe: i.reason for i in diag.inconclusive}
    assert "cache (timeout: gave up after 10 s)" in reasons["cache-incomplete-module"]
