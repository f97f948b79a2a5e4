"""Findings and the fixes that address them: the vocabulary every probe speaks.

A finding is the unit users paste into bug reports and machines read from
``--json``, so its fields are a contract: ``id`` is stable and names the
problem (kebab-case), ``severity`` is one of error/warning/info, ``evidence``
says what was seen and where, ``fixes`` say what to run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

from fidoctor.textsafe import safe_command, shown

SEVERITIES = ("error", "warning", "info")
SAFETY = ("safe", "caution", "risky")


@dataclass
class Fix:
    """One way to address a finding: a description and the exact commands.

    ``id`` names the fix implementation that ``fidoctor fix`` can apply (empty
    when the fix is advice only); ``safety`` grades how much can go wrong.
    """

    description: str
    commands: List[str] = field(default_factory=list)
    id: str = ""
    safety: str = "safe"

    def __post_init__(self) -> None:
        if self.safety not in SAFETY:
            raise ValueError(f"unknown safety grade {self.safety!r}")
        # Rendered everywhere (text, Markdown, JSON): never a raw control character, and
        # never a command whose pasting could run part of a name (fidoctor.textsafe).
        self.description = shown(self.description)
        self.commands = [safe_command(c) for c in self.commands]


@dataclass
class Finding:
    """Something a probe concluded from a snapshot.

    ``subject`` tells two findings of the same id apart (a module name, a
    path, a pid); ``data`` carries machine-readable details that fixes use;
    ``caused_by`` names the cause finding's id when another finding explains
    this one (set by ``fidoctor.causes.link``; None otherwise).
    """

    id: str
    severity: str
    title: str
    evidence: List[str] = field(default_factory=list)
    fixes: List[Fix] = field(default_factory=list)
    subject: str = ""
    data: Dict[str, Any] = field(default_factory=dict)
    caused_by: Optional[str] = None

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}")
        self.title, self.subject = shown(self.title), shown(self.subject)
        self.evidence = [shown(e) for e in self.evidence]

    @property
    def is_problem(self) -> bool:
        return self.severity in ("error", "warning")

    def to_dict(self) -> Dict[str, Any]:
        from fidoctor.findingdocs import doc_ref

        return dict(asdict(self), doc=doc_ref(self.id))  # the page: `fidoctor explain ID`

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> Finding:
        fixes = [Fix(**f) for f in d.get("fixes", [])]
        rest = {k: v for k, v in d.items() if k not in ("fixes", "doc")}
        return cls(fixes=fixes, **rest)


@dataclass
class Inconclusive:
    """A probe that could not judge because a fact it needs was not gathered."""

    probe: str
    reason: str

    def __post_init__(self) -> None:
        self.reason = shown(self.reason)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


class ProbeInconclusive(Exception):
    """Raised by a probe's ``check`` that cannot judge from the facts it has (no GPU, no
    driver, nvcc could not be asked); the message is the reason users see."""


def sort_key(f: Finding) -> tuple:
    return (SEVERITIES.index(f.severity), f.id, f.subject)
