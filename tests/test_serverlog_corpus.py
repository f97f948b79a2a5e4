"""The public bug-report corpus: causes named, unrelated failures left alone.

Real log lines from public GitHub threads (``tests/fixtures/serverlog-corpus``,
sources in its README). Each case must keep giving what ``cases.json`` says:
its expected id and no other error, or, for an unrelated failure (an OOM, an
NCCL error, a kernel fault that mentions FlashInfer), no error or warning.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "fixtures" / "serverlog-corpus"
CASES = json.loads((CORPUS / "cases.json").read_text())
sys.path.insert(0, str(ROOT / "bench"))


@pytest.mark.parametrize("case", CASES, ids=[c["file"] for c in CASES])
def test_corpus_case(case):
    from bench_serverlog_corpus import judge

    from fidoctor.serverlog import analyse

    d = analyse([str(CORPUS / case["file"])])
    got = [(f["id"], f["severity"]) for f in d["findings"]]
    assert judge(case, d["findings"]), got
    lines = (CORPUS / case["file"]).read_text(encoding="utf-8").splitlines()
    for f in d["findings"]:  # evidence quotes a line of the file, at its number
        for e in f["data"].get("log", []):
            assert 1 <= e["line"] <= len(lines)
            assert e["text"].strip()[:40] in lines[e["line"] - 1] + (
                lines[e["line"]] if e["line"] < len(lines) else "")


def test_corpus_has_both_kinds():
    assert sum(1 for c in CASES if c["expect"] and c["cause_in_text"]) >= 10
    assert sum(1 for c in CASES if c["expect"] is None) >= 5
