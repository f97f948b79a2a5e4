"""FlashInfer 0.7.4+'s ``FLASHINFER_JIT_BUILD_LOG``: one JSON line per finished build.

Read in FlashInfer's own source (0.7.4 ``jit/core.py``, ``_record_jit_build``):
when ``FLASHINFER_JIT_BUILD_LOG`` names a file, every build that returns
appends (``O_APPEND``, one write) ``{"toolchain": "nvcc", "name": <module>,
"seconds": <wall, 3 decimals>, "pid": <pid>, "time": <epoch>}``. Failed builds
are not recorded; no-op builds are (near-zero seconds).

``durations(snap)`` gives measured build seconds per module from that file
(gathered into the snapshot's ``jit_build_log`` section) and from server logs
read with ``--log`` (``serverlog`` section): what the warmup's and the live
watch's ETAs are refined with.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List

from fidoctor.fsutil import open_regular

MAX_BYTES = 64 << 20
NOOP_S = 0.5  # a build under this found everything up to date: not a compile time


def parse(path: str, max_bytes: int = MAX_BYTES) -> Dict[str, Any]:
    """Per-module build facts from the JSON lines of ``path`` (its last ``max_bytes``)."""
    modules: Dict[str, Dict[str, Any]] = {}
    records = bad = 0
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        complete = size <= max_bytes
        if not complete:
            f.seek(size - max_bytes)
            f.readline()  # resume at a line start
        for raw in f:
            try:
                rec = json.loads(raw)
                name, secs = str(rec["name"]), float(rec["seconds"])
            except (ValueError, KeyError, TypeError):
                bad += 1
                continue
            records += 1
            m = modules.setdefault(name, {"builds": 0, "compiles": [], "toolchain": "",
                                          "last_time": None, "noop_builds": 0})
            m["builds"] += 1
            m["toolchain"] = str(rec.get("toolchain") or m["toolchain"])
            m["last_time"] = rec.get("time", m["last_time"])
            if secs >= NOOP_S:
                m["compiles"] = (m["compiles"] + [round(secs, 3)])[-20:]
            else:
                m["noop_builds"] += 1
    return {"path": path, "size": size, "complete": complete, "records": records,
            "bad_lines": bad, "modules": modules}


def durations(snap) -> Dict[str, List[float]]:
    """Measured compile seconds per module name, oldest first (both sources)."""
    out: Dict[str, List[float]] = {}
    for name, m in (snap.data("jit_build_log").get("modules") or {}).items():
        out.setdefault(name, []).extend(m.get("compiles") or [])
    for f in snap.data("serverlog").get("files") or []:
        for b in f.get("builds") or []:
            if b.get("outcome") == "finished" and (b.get("seconds") or 0) >= NOOP_S:
                out.setdefault(b["module"], []).append(float(b["seconds"]))
    return out
