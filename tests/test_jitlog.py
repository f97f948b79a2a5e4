"""The JIT log parser against every real format, garbage, and hostile files."""

from __future__ import annotations

import os
import time

import pytest
from conftest import DECODE, FA3, log_line

from fidoctor.flashinfer.jitlog import CHUNK, parse_log


def write(tmp_path, lines, name="flashinfer_jit.log", mode="w"):
    p = tmp_path / name
    with open(p, mode + ("b" if isinstance(lines[0], bytes) else "")) as f:
        f.writelines(lines)
    return str(p)


def test_old_format_pairs_loading_and_finished(tmp_path):
    now = time.time()
    p = write(tmp_path, [
        log_line("old", "loading", DECODE, now - 100),
        log_line("old", "finished", DECODE, now - 90),
        log_line("old", "loading", FA3, now - 80),
    ])
    r = parse_log(p)
    assert r["format"] == "0.2.0-0.2.11"
    assert r["modules"][DECODE]["last_finish"]["offset"] > r["modules"][DECODE]["last_start"]["offset"]
    assert "last_finish" not in r["modules"][FA3]
    assert r["modules"][FA3]["last_start"]["ts"] == pytest.approx(now - 80, abs=1.0)
    assert r["lines"] == 3 and r["garbage_lines"] == 0


def test_new_style_loading_lines_are_recognised(tmp_path):
    p = write(tmp_path, [log_line("new", "loading", DECODE, time.time())])
    r = parse_log(p)
    assert r["format"] == "0.2.12+"
    assert r["modules"][DECODE]["starts"] == 1


def test_07_building_lines(tmp_path):
    """The exact line 0.7.2.post1 writes (real-builds-on-cpu.md §3.5)."""
    line = ("2026-11-23 05:07:28,595 - INFO - core.py:594 - flashinfer.jit: Building JIT module "
            f"{DECODE}; this can take several minutes on first use.\n")
    p = write(tmp_path, [line, line])
    r = parse_log(p)
    assert r["format"] == "0.7"
    m = r["modules"][DECODE]
    assert m["starts"] == 2 and m["last_start"]["event"] == "building"
    assert m["last_start"]["line"].startswith("2026-11-23 05:07:28,595")
    expected = time.mktime(time.strptime("2026-11-23 05:07:28", "%Y-%m-%d %H:%M:%S")) + 0.595
    assert m["last_start"]["ts"] == expected


def test_compact_format_without_spaces(tmp_path):
    """FI#972 quotes 'flashinfer.jit:Loading JIT ops:batch_prefill…'."""
    p = write(tmp_path, [f"2025-01-01 00:00:00,000 - INFO - flashinfer.jit:Loading JIT ops:{FA3}\n"])
    assert FA3 in parse_log(p)["modules"]


def test_binary_garbage_and_invalid_utf8_are_counted_not_fatal(tmp_path):
    now = time.time()
    p = write(tmp_path, [
        log_line("old", "loading", DECODE, now).encode(),
        b"\xff\xfe\x00\x01 binary junk\n",
        b"caf\xe9 latin-1 line\n",
        os.urandom(300).replace(b"\n", b"x") + b"\n",
        log_line("old", "finished", DECODE, now).encode(),
    ])
    r = parse_log(p)
    assert r["garbage_lines"] == 3
    assert r["modules"][DECODE]["finishes"] == 1


def test_last_line_without_newline_and_huge_line(tmp_path):
    now = time.time()
    p = tmp_path / "log"
    with open(p, "wb") as f:
        f.write(b"x" * (3 * CHUNK))  # one enormous line with no newline: garbage
        f.write(b"\n")
        f.write(log_line("old", "loading", FA3, now).rstrip("\n").encode())
    r = parse_log(str(p))
    assert r["garbage_lines"] >= 1
    assert FA3 in r["modules"]


def test_lines_spanning_chunk_boundaries(tmp_path):
    now = time.time()
    filler = "2025-01-01 00:00:00,000 - INFO - flashinfer.jit: something else entirely\n"
    lines = [filler] * ((CHUNK // len(filler)) - 1) + ["pad" * 7 + "\n"]
    lines += [log_line("old", "loading", FA3, now)] * 3
    r = parse_log(write(tmp_path, lines))
    assert r["modules"][FA3]["starts"] == 3
    assert r["modules"][FA3]["last_start"]["line"].endswith(FA3)


def test_fifo_is_refused_not_blocked_on(tmp_path):
    fifo = tmp_path / "flashinfer_jit.log"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        parse_log(str(fifo))


def test_time_budget_stops_early_and_says_so(tmp_path):
    now = time.time()
    line = log_line("old", "loading", DECODE, now)
    p = write(tmp_path, [line] * (3 * CHUNK // len(line)))
    r = parse_log(p, budget_s=0.0)
    assert r["complete"] is False
    assert 0 < r["bytes_read"] < os.path.getsize(p)


def test_resume_reads_only_the_appended_tail_and_matches_a_full_parse(tmp_path):
    now = time.time()
    p = write(tmp_path, [log_line("old", "loading", DECODE, now - 50),
                         log_line("old", "finished", DECODE, now - 49)])
    first = parse_log(p)
    with open(p, "a") as f:  # FlashInfer appends; a half-written line is finished later
        f.write(log_line("old", "loading", FA3, now - 10).rstrip("\n"))
    second = parse_log(p, resume=first["state"])
    assert second["resumed"] and FA3 in second["modules"]
    with open(p, "a") as f:
        f.write("\n" + log_line("old", "finished", FA3, now))
    third = parse_log(p, resume=second["state"])
    full = parse_log(p)
    assert third["resumed"] and not full["resumed"]
    for key in ("modules", "lines", "garbage_lines", "events", "format"):
        assert third[key] == full[key], key
    assert third["modules"][FA3]["finishes"] == 1


def test_resume_is_refused_for_a_rewritten_log(tmp_path):
    now = time.time()
    p = write(tmp_path, [log_line("old", "loading", DECODE, now)])
    state = parse_log(p)["state"]
    write(tmp_path, [log_line("new", "building", FA3, now)])  # truncated and rewritten
    r = parse_log(p, resume=state)
    assert not r["resumed"]
    assert list(r["modules"]) == [FA3]
