"""``warmup --clear-incomplete``: the ``cache-incomplete-module`` findings, fixed like ``fix`` does.

The findings come from the probes (``fidoctor.warmup.cache.check``), the plan
from the fix planner (``quarantine-module`` for each), the change from the
transaction layer: one ``FixLock``, one journal for every dir moved, so one
``fidoctor undo`` (or ``undo --id``) brings them all back. Nothing is asked:
the flag is the request, and moving a dir aside is graded safe.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Dict, List, Mapping

from fidoctor.errors import FidoctorError
from fidoctor.fixes import FixContext
from fidoctor.fixes._planner import make_plans


def clear_incomplete(env: Mapping[str, str], state: str) -> Dict[str, Any]:
    """Move every incomplete module dir aside; {"actions": [lines], "txid": id or None}."""
    from fidoctor.txn import FixLock, apply_steps, interrupted
    from fidoctor.txn.journal import new_txid
    from fidoctor.warmup.cache import INCOMPLETE, check

    res = check(env)
    incomplete = [f for f in res.findings if f.id == INCOMPLETE]  # not the load failures
    lines: List[str] = [f"left {m['dir']}: {m['problem']}" for w in res.workspaces
                        for m in w["modules"] if m["state"] == "busy"]
    if not incomplete:
        return {"actions": lines + ["no incomplete module dirs"], "txid": None}
    with FixLock(state, "fidoctor warmup --clear-incomplete", wait_s=10.0):
        stuck = interrupted(state)
        if stuck:
            raise FidoctorError(f"fix {stuck[-1].txid} was interrupted before it finished",
                                "recover it first with: fidoctor undo")
        txid = new_txid()
        ctx = res.snapshot.context
        fctx = FixContext(txid=txid, state=state, env=dict(env), python=ctx.get("python") or "",
                          snapshot=res.snapshot, flashinfer_root=ctx.get("flashinfer_root") or "",
                          requested=("quarantine-module",))
        fp = make_plans(incomplete, fctx, prefer=("quarantine-module",))
        for f, why in fp.unaddressed:
            lines.append(f"left {f.data.get('module_dir') or f.subject}: {why}")
        if not fp.steps:
            return {"actions": lines, "txid": None}
        header = {"command": "warmup", "argv": sys.argv[1:], "time": time.time(),
                  "plans": [p.to_dict() for p in fp.plans]}
        apply_steps(state, fp.steps, header, txid=txid)
    for s in fp.steps:
        lines.append(f"moved {s.src} aside to {s.dst} (undo: fidoctor undo --id {txid})")
    return {"actions": lines, "txid": txid}
