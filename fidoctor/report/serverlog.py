"""Report parts for server logs and FlashInfer's own collect-env output.

``server_log_excerpt``: the lines that matter, with their file and line
number: every line a log finding quotes, and the first build-phase anchor,
so a maintainer sees where in the paste the verdict came from.
``collect_env_excerpt``: ``flashinfer collect-env --json`` verbatim (collapsed).
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Tuple

from fidoctor.report.markdown import details, fenced

MAX_LINES = 40


def server_log_excerpt(diag) -> List[str]:
    sec = diag.snapshot.section("serverlog")
    if sec is None or not sec.ok:
        return []
    out: List[str] = []
    for f in sec.data.get("files", []):
        path = f.get("path")
        keep: Dict[int, Tuple[str, str]] = {}
        anchor = f.get("anchor")
        if anchor:
            keep[anchor["line"]] = ("anchor: " + anchor.get("kind", ""), anchor["text"])
        for finding in diag.findings:
            for e in finding.data.get("log") or []:
                if e.get("file") == path:
                    keep.setdefault(e["line"], (finding.id, e["text"]))
        head = (f"# {path}: {f.get('lines')} lines"
                + ("" if f.get("complete", True) else f"; read in part ({f.get('stopped')})"))
        body = [head] + [f"{n:>7}  {text.rstrip()}    # {why}"
                         for n, (why, text) in sorted(keep.items())[:MAX_LINES]]
        if len(keep) > MAX_LINES:
            body.append(f"# … {len(keep) - MAX_LINES} more lines in the snapshot")
        out += details(f"Server log {path} ({len(keep)} lines that matter)", fenced(body, "text"))
    return out


def collect_env_excerpt(snap) -> List[str]:
    sec = snap.section("collect_env")
    if sec is None:
        return []
    d: Dict[str, Any] = sec.data if sec.ok else {"error": sec.error or sec.status}
    cmd = " ".join(d.get("argv") or ["flashinfer", "collect-env", "--json"])
    if d.get("json") is not None:
        body = fenced(json.dumps(d["json"], indent=2).splitlines(), "json")
    elif d.get("text"):
        body = fenced(str(d["text"]).splitlines(), "text")
    else:
        body = [f"Not available: {d.get('error') or 'no output'}"]
    return details(f"FlashInfer's own report ({cmd})", body)
