"""``fidoctor report``: a redacted Markdown report plus a snapshot that replays to it.

``build`` is the one entry point: it redacts the snapshot (a separate pass,
see ``redact``), renders the findings of the *original* snapshot with their
strings redacted the same way, runs the redactor over the rendered text once
more, and checks that the redacted snapshot replays to the same findings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from fidoctor.diagnosis import Diagnosis, diagnose
from fidoctor.model import Finding, Inconclusive
from fidoctor.report.markdown import render
from fidoctor.report.redact import Redactor, only_target_trees
from fidoctor.snapshot import Snapshot


@dataclass
class Report:
    markdown: str
    snapshot: Snapshot  # redacted unless redaction was turned off
    diagnosis: Diagnosis  # what the report shows (strings redacted)
    redaction: Optional[Dict[str, int]]  # kinds → count hidden; None: not redacted
    replay_mismatch: List[Tuple[str, str]] = field(default_factory=list)


def keys(findings: List[Finding]) -> List[Tuple[str, str]]:
    return sorted((f.id, f.subject) for f in findings)


def redacted_snapshot(snap: Snapshot, local_env: Optional[Dict[str, str]] = None,
                      r: Optional[Redactor] = None) -> Tuple[Snapshot, Dict[str, int]]:
    """``snap`` through the redaction pass (what ``snapshot`` writes by default)."""
    r = r or Redactor()
    raw = only_target_trees(snap.to_dict())
    r.learn(raw)
    r.learn_local(local_env)
    return Snapshot.from_dict(r.tree(raw)), r.summary()


def build(snap: Snapshot, redact: bool = True, snapshot_name: Optional[str] = None,
          local_env: Optional[Dict[str, str]] = None, command: Optional[str] = None) -> Report:
    """Diagnose ``snap`` and render the report (redacted unless ``redact`` is False);
    ``command``: the fidoctor command line that made it (redacted like the rest)."""
    diag = diagnose(snap)
    if not redact:
        return Report(render(diag, None, snapshot_name, command), snap, diag, None)
    r = Redactor()
    raw = only_target_trees(snap.to_dict())
    r.learn(raw)
    r.learn_local(local_env)
    for f in diag.findings:
        r.learn(f.to_dict())
    rsnap = Snapshot.from_dict(r.tree(raw))
    shown = Diagnosis(
        snapshot=rsnap,
        findings=[Finding.from_dict(r.tree(f.to_dict())) for f in diag.findings],
        inconclusive=[Inconclusive(**r.tree(i.to_dict())) for i in diag.inconclusive],
    )
    text = r.text(render(shown, r.summary(), snapshot_name, command))
    replay = diagnose(rsnap)
    mismatch = sorted(set(keys(shown.findings)) ^ set(keys(replay.findings)))
    return Report(text, rsnap, shown, r.summary(), mismatch)
