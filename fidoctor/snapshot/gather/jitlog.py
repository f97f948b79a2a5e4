"""Every ``flashinfer_jit.log`` under the cache root, parsed (streamed, budgeted)."""

from __future__ import annotations

import os
from typing import Any, Dict

from fidoctor.flashinfer.jitlog import parse_log
from fidoctor.flashinfer.layout import discover_workspaces
from fidoctor.fsutil import lstat_info

NAME = "jitlog"
BUDGET_S = 12.0
ORDER = 3
PARSE_BUDGET_S = 8.0


def gather(ctx, done) -> Dict[str, Any]:
    logs = []
    for ws in discover_workspaces(ctx.flashinfer_root):
        path = os.path.join(ws["path"], "flashinfer_jit.log")
        info = lstat_info(path)
        if info["kind"] == "absent":
            continue
        entry: Dict[str, Any] = {"workspace": ws["path"], "path": path, "kind": info["kind"]}
        if info["kind"] not in ("file", "symlink"):
            entry["error"] = f"not a regular file ({info['kind']})"
        else:
            try:
                entry.update(parse_log(path, budget_s=PARSE_BUDGET_S))
            except OSError as e:
                entry["error"] = e.strerror or str(e)
        logs.append(entry)
    return {"logs": logs}
