"""``fidoctor history``: every fix fidoctor applied here, newest last, with its status."""

from __future__ import annotations

import json
import math
import time

import click


@click.command("history")
@click.option("--json", "as_json", is_flag=True, help="One JSON list of fixes.")
def command(as_json) -> int:
    """List fixes: id, when, status (committed, undone, rolled-back, interrupted, damaged),
    what."""
    from fidoctor.paths import state_dir
    from fidoctor.textsafe import shown
    from fidoctor.txn import history

    state = state_dir()
    rows = []
    warnings = []
    for j in history(state):
        h = j.header
        warnings += j.warnings
        # A journal is input too: fields of the wrong type are dropped, never a crash.
        plans = [p for p in h.get("plans", []) if isinstance(p, dict)] \
            if isinstance(h.get("plans"), list) else []
        h = dict(h, plans=plans,
                 steps=[str(x) for x in h.get("steps", [])] if isinstance(h.get("steps"), list)
                 else [],
                 command=h.get("command") if isinstance(h.get("command"), str) else None,
                 fix=h.get("fix") if isinstance(h.get("fix"), str) else None)
        t = h.get("time")
        # A hand-edited time (1e308, NaN, a year past 9999) is unknown, not a crash or bad JSON.
        t = t if isinstance(t, (int, float)) and not isinstance(t, bool) \
            and math.isfinite(t) and 0 <= t < 253402300800 else None
        rows.append({
            "id": j.txid, "time": t, "status": j.status,
            "findings": [f"{p.get('finding')} {p.get('subject')}".strip()
                         for p in h.get("plans", [])],
            "fixes": sorted({str(p["fix"]) for p in plans if p.get("fix")}
                            | ({str(h["fix"])} if h.get("fix") else set())),
            "command": h.get("command") or "fix",
            "steps": h.get("steps", []), "journal": j.path,
        })
    for w in warnings:
        click.echo(f"warning: {shown(w)}", err=True)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return 0
    if not rows:
        click.echo(f"no fixes recorded (state dir: {state})")
        return 0
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["time"])) \
            if isinstance(r["time"], (int, float)) else "(time unknown)     "
        click.echo(shown(f"{r['id']}  {when}  {r['status']:<12} {r['command']:<7} "
                         f"{', '.join(r['fixes'])}"))
        for s in r["steps"]:
            click.echo(f"    - {shown(s)}")
    return 0
