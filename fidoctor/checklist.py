"""``fidoctor diagnose --list-checks``: every probe, what it reads, and its time budget.

A probe is a pure function of the snapshot, so its time is the time of the gatherers that
collect what it reads. Gatherers run in parallel, each from the moment the sections it
requires are done, each under its own budget, and all of them under the runner's global
budget: a probe's worst case is the longest chain of budgets below the sections it reads,
capped by that global budget.
"""

from __future__ import annotations

from typing import Any, Dict, List

from fidoctor.findingdocs import doc_ref


def _worst(name: str, gatherers: Dict[str, Any], seen: tuple = ()) -> float:
    g = gatherers.get(name)
    if g is None or name in seen:
        return 0.0
    below = [_worst(r, gatherers, seen + (name,)) for r in g.requires]
    return g.budget_s + max(below, default=0.0)


def checks() -> List[Dict[str, Any]]:
    from fidoctor.probes import all_probes
    from fidoctor.snapshot.gather import all_gatherers
    from fidoctor.snapshot.runner import GLOBAL_BUDGET_S

    gatherers = {g.name: g for g in all_gatherers()}
    out = []
    for p in all_probes():
        worst = max((_worst(r, gatherers) for r in p.requires), default=0.0)
        out.append({
            "id": p.id,
            "summary": p.doc.splitlines()[0].split(":", 1)[-1].strip() if p.doc else "",
            "requires": list(p.requires),
            "budgets_s": {r: gatherers[r].budget_s for r in p.requires if r in gatherers},
            "budget_s": min(worst, GLOBAL_BUDGET_S),
            "cause": p.cause,
            "doc": doc_ref(p.id),
        })
    return out


def text_lines(rows: List[Dict[str, Any]]) -> List[str]:
    width = max((len(r["id"]) for r in rows), default=0)
    lines = [f"{'id'.ljust(width)}  {'budget':>6}  reads (gatherer budget)"]
    for r in rows:
        reads = ", ".join(f"{s} {r['budgets_s'][s]:g} s" if s in r["budgets_s"] else s
                          for s in r["requires"])
        lines.append(f"{r['id'].ljust(width)}  {r['budget_s']:>4.0f} s  {reads}")
    lines.append("")
    lines.append("budget: the longest chain of gatherer budgets below what the probe reads "
                 "(gatherers run in parallel, capped by the global budget); "
                 "`fidoctor explain ID` for a check's page")
    return lines
