"""Guarded warmup: compile FlashInfer's usual modules in the target, safely.

Public API (``fidoctor fix`` uses it for its proof step)::

    from fidoctor.warmup import run_warmup
    result = run_warmup(python="/opt/venv/bin/python", modules="decode", arch="9.0a",
                        stall_after=60)
    result.exit_code        # 0 all built/cached, 1 some failed/stalled/timed out
    result.findings         # warmup-stalled / warmup-timed-out / warmup-build-failed
    result.to_dict()        # the --json document

Layout: specs (what to build), child (runs in the target), scheduler +
parallel (several modules at once, each by its own ninja, one job budget),
supervisor + watch (one guarded build per child: --sequential and old
FlashInfers), result (ModuleResult), verdicts (findings), jobs (the budget,
orphans), quarantine (move aside through fidoctor.txn), cache (--check from
the probes, --once), plan (--plan), progress (lines/bar/JSON).
--clear-incomplete is the fix planner's (fidoctor.fixes._clear).
"""

from fidoctor.warmup.runner import Progress, WarmupResult, run_warmup

__all__ = ["Progress", "WarmupResult", "run_warmup"]
