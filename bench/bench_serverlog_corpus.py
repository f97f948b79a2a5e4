"""How often ``fidoctor diagnose --log`` names the cause on real public bug reports.

The corpus (``tests/fixtures/serverlog-corpus/``, sources in its README) holds
log lines quoted from public GitHub issues: FlashInfer JIT failures whose text
shows the cause, two whose text does not, and unrelated failures (OOM, NCCL,
illegal memory access) that mention FlashInfer or happen in a serving stack.

A case with a cause is *named correctly* when its expected id is among the
findings and no other error id is (a wrong cause next to the right one does
not count). An unrelated failure passes when no error or warning is raised.
Target (issue 15): >= 90 % named correctly, 0 JIT errors on unrelated failures.
Cases marked ``"set": "holdout"`` were added after the matchers were tuned on
the others; their score is printed apart (the honest figure for new pastes).

    python bench/bench_serverlog_corpus.py [-v]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "fixtures" / "serverlog-corpus"


def judge(case: Dict[str, Any], findings: List[Dict[str, Any]]) -> bool:
    ids = {f["id"] for f in findings}
    errors = {f["id"] for f in findings if f["severity"] == "error"}
    problems = {f["id"] for f in findings if f["severity"] in ("error", "warning")}
    if case["expect"] is None:
        return not problems
    return case["expect"] in ids and errors <= {case["expect"]}


def run(verbose: bool = False) -> Dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from fidoctor.serverlog import analyse

    cases = json.loads((CORPUS / "cases.json").read_text())
    rows = []
    for c in cases:
        d = analyse([str(CORPUS / c["file"])])
        ok = judge(c, d["findings"])
        got = ", ".join(f"{f['id']}({f['severity'][0]})" for f in d["findings"]) or "-"
        rows.append((c, ok, got))
        if verbose or not ok:
            print(f"{'ok ' if ok else 'BAD'} {c['file']}: expect {c['expect']} got {got}")
    shown = [(c, ok) for c, ok, _ in rows if c["expect"] and c["cause_in_text"]]
    hidden = [(c, ok) for c, ok, _ in rows if c["expect"] and not c["cause_in_text"]]
    unrelated = [(c, ok) for c, ok, _ in rows if c["expect"] is None]
    out = {
        "named_correctly": sum(ok for _, ok in shown), "with_cause": len(shown),
        "no_cause_ok": sum(ok for _, ok in hidden), "no_cause": len(hidden),
        "unrelated_clean": sum(ok for _, ok in unrelated), "unrelated": len(unrelated),
    }
    held = [(c, ok) for c, ok, _ in rows if c.get("set") == "holdout"]
    out["holdout_ok"], out["holdout"] = sum(ok for _, ok in held), len(held)
    pct = 100.0 * out["named_correctly"] / max(1, out["with_cause"])
    print(f"named correctly: {out['named_correctly']}/{out['with_cause']} ({pct:.0f} %) of the "
          f"cases whose text shows the cause; {out['no_cause_ok']}/{out['no_cause']} without a "
          f"cause reported as such; {out['unrelated_clean']}/{out['unrelated']} unrelated "
          "failures with no error or warning")
    print(f"of which held out (added after the matchers were tuned on the rest): "
          f"{out['holdout_ok']}/{out['holdout']} right")
    return out


if __name__ == "__main__":
    run("-v" in sys.argv)
