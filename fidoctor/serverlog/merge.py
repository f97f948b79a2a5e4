"""Put log findings into a diagnosis: one finding per thing, with both evidences.

A log finding and a machine finding with the same id (and, when both name a
module, the same module) are the same problem seen twice: the machine's
finding is kept (its fixes are the ones ``fidoctor fix`` can apply) and gains
the log's evidence, ``data["log"]`` and ``data["sources"] = ["machine", "log"]``.
Anything else from the log is added as it is (``data["source"] = "log"``).
"""

from __future__ import annotations

from typing import List

from fidoctor.model import Finding, Inconclusive
from fidoctor.serverlog import SECTION

LOG_PREFIX = "server log "


def log_findings(snap) -> List[Finding]:
    """The findings recorded in the snapshot's serverlog section (none without one)."""
    sec = snap.section(SECTION)
    if sec is None or not sec.ok:
        return []
    return [Finding.from_dict(d) for d in sec.data.get("findings", [])]


def _same(machine: Finding, log: Finding) -> bool:
    if machine.id != log.id:
        return False
    a, b = machine.data.get("module"), log.data.get("module")
    return not a or not b or a == b


def merge(findings: List[Finding], logs: List[Finding]) -> List[Finding]:
    out = list(findings)
    for lf in logs:
        twin = next((f for f in out if f.data.get("source") != "log" and _same(f, lf)), None)
        if twin is None:
            out.append(lf)
            continue
        twin.evidence.extend(LOG_PREFIX + e for e in lf.evidence)
        twin.data["log"] = lf.data.get("log", [])
        twin.data["sources"] = ["machine", "log"]
    return out


def log_gaps(snap) -> List[Inconclusive]:
    """Logs read only in part (a budget, a broken gzip): said, never passed over."""
    sec = snap.section(SECTION)
    if sec is None or not sec.ok:
        return []
    files = sec.data.get("files", [])
    return [Inconclusive("serverlog", f"{f.get('path')}: read {f.get('bytes_read')} bytes only "
                                      f"({f.get('stopped')})")
            for f in files if not f.get("complete", True)] + \
        [Inconclusive("serverlog", f"{f.get('path')}: {f.get('not_text')}")
         for f in files if f.get("not_text")]
