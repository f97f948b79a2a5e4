"""A look at the box from inside the live watch: diagnose's own gatherers, run now, budgeted.

The watch's judgements that need more than its own sampling (orphaned compilers after a
lock comes free, a build thrashing at its memory limit) gather the same sections diagnose
would and run the probe on them. The gather runs in a daemon thread given a budget: a look
that fails or overruns returns nothing, and the watch goes on — it must never end it.
"""

from __future__ import annotations

import threading
from types import ModuleType
from typing import Any, Dict, Optional, Sequence

from fidoctor.snapshot import Section


def gather_within(budget_s: float, name: str, ctx: Any,
                  gatherers: Sequence[ModuleType]) -> Optional[Dict[str, Section]]:
    """``gatherers`` (modules with ``NAME`` and ``gather(ctx, deadline)``) run in a thread
    called ``name``: their sections by name, or None past ``budget_s`` or on any error."""
    box: Dict[str, Any] = {}

    def run() -> None:
        try:
            box.update((g.NAME, g.gather(ctx, None)) for g in gatherers)
        except Exception as e:  # noqa: BLE001 - a failed look must not end the watch
            box["\0error"] = e

    t = threading.Thread(target=run, name=name, daemon=True)
    t.start()
    t.join(budget_s)
    if t.is_alive() or "\0error" in box:
        return None
    return {g.NAME: Section("ok", box[g.NAME]) for g in gatherers}
