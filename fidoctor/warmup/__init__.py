"""Guarded warmup: compile FlashInfer's usual modules in the target, safely.

Public API (``fidoctor fix`` uses it for its proof step)::

    from fidoctor.warmup import run_warmup
    result = run_warmup(python="/opt/venv/bin/python", modules="decode", arch="9.0a",
                        stall_after=60)
    result.exit_code        # 0 all built/cached, 1 some failed/stalled/timed out
    result.findings         # warmup-stalled / warmup-timed-out / warmup-build-failed
    result.to_dict()        # the --json document

Layout: specs (what to build), child (runs in the target), supervisor +
watch (one guarded build), jobs (MAX_JOBS, orphans), quarantine (move
aside, journalled), cache (--check, --clear-incomplete, --once),
progress (lines/bar/JSON).
"""

from fidoctor.warmup.runner import Progress, WarmupResult, run_warmup

__all__ = ["Progress", "WarmupResult", "run_warmup"]
