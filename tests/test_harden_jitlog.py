"""Issue 14, class 10: a big log never hides the build hanging now.

Before: a log over ~1.3 GB was re-read from byte 0 on every run until the parse budget
ran out, so its newest ``Building`` line was never judged, and a parse cut short saved
nothing to resume from. The big log here is real and mostly a hole (a sparse file: old
lines, 300 MiB of NULs, then the newest build), so the test costs no disk.
"""

from __future__ import annotations

import json
import time

import pytest
from conftest import DECODE, FA2, log_line, run_cli

from fidoctor.flashinfer.jitlog import TAIL_FIRST_BYTES, parse_log

pytestmark = pytest.mark.timeout(120)


def big_log(path, newest: str, hole: int = TAIL_FIRST_BYTES + (44 << 20)) -> None:
    now = time.time()
    with open(path, "wb") as f:
        f.write(log_line("old", "loading", DECODE, now - 9000).encode())
        f.write(log_line("old", "finished", DECODE, now - 8990).encode())
        f.write(log_line("old", "loading", "norm_old", now - 8000).encode())
        f.seek(f.tell() + hole)  # a hole: reads as NUL garbage, costs no disk
        f.write(b"\n" + log_line("new", "building", newest, now - 60).encode())


def test_newest_build_is_judged_in_a_log_too_big_to_read(tmp_path):
    log = tmp_path / "flashinfer_jit.log"
    big_log(log, FA2)
    out = parse_log(str(log), budget_s=0.0)  # the budget runs out at once: newest first
    assert out["modules"][FA2]["last_start"]["event"] == "building"
    assert out["complete"] is False and out["newest_first"]["tail_from"] > 0
    # A Loading line before an unread stretch is not called unfinished.
    if out["newest_first"]["unread_gap"]:
        assert "norm_old" not in out["modules"]


def test_saved_offset_advances_when_a_parse_is_cut_short(tmp_path):
    log = tmp_path / "flashinfer_jit.log"
    now = time.time()
    with open(log, "w") as f:
        for i in range(200_000):
            f.write(log_line("new", "building", f"norm_{i % 50}", now - 100))
    first = parse_log(str(log), budget_s=0.0)  # cut after the first chunk
    assert first["complete"] is False and 0 < first["state"]["offset"] < log.stat().st_size
    second = parse_log(str(log), budget_s=0.0, resume=first["state"])
    assert second["resumed"] and second["state"]["offset"] > first["state"]["offset"]
    done = second
    while not done["complete"]:
        done = parse_log(str(log), budget_s=0.0, resume=done["state"])
    full = parse_log(str(log), budget_s=60.0)
    assert done["events"] == full["events"] == 200_000
    assert done["modules"] == full["modules"]


def test_diagnose_names_the_build_hanging_now_in_a_huge_log(box, tmp_path):
    ws = box.workspace()
    box.module(ws, DECODE)
    box.module(ws, FA2, so="missing", depfiles=1)
    big_log(ws / "flashinfer_jit.log", FA2)
    r = run_cli(["diagnose", "--json"], env=box.env(XDG_CACHE_HOME=str(tmp_path / "xdg")))
    doc = json.loads(r.stdout)
    hits = [f for f in doc["findings"] if f["id"] == "jit-log-unfinished"]
    assert any(FA2 in f["subject"] or FA2 in json.dumps(f["data"]) for f in hits), doc["findings"]
