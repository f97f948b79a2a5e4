"""Fix registry: one module per fix id, discovered like the probes.

A fix module defines::

    ID = "quarantine-module"            # the id probes put in Fix(id=...)
    SAFETY = "safe"                     # safe | caution | risky (default grade)
    FINDINGS = ("some-finding-id",)     # optional: tried first for these findings,
                                        # whatever fixes the probe attached
    def plan(finding, ctx) -> Plan      # raise NotApplicable(reason) to decline

and a docstring (what it changes, why, how safe, how undone). ``plan`` only
*describes*: it returns transaction steps (fidoctor.txn.steps) and never
touches the box; fidoctor.txn applies them. A finding lists its fixes safest
first; the first whose ``plan`` accepts the finding is chosen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from fidoctor.model import Finding
from fidoctor.registry import plugin_modules


class NotApplicable(Exception):
    """This fix does not apply here; the message says why (shown in the plan)."""


@dataclass
class FixContext:
    """What a fix may look at while planning: the snapshot and the target's view."""

    txid: str
    state: str
    env: Dict[str, str]
    python: str
    snapshot: Any = None
    pid: Optional[int] = None
    flashinfer_root: str = ""  # the target's cache: fixes never act on paths outside it
    requested: Tuple[str, ...] = ()  # fix ids the user asked for by name (--use)


@dataclass
class Plan:
    """One finding's fix: what will change, how safe that is, and why."""

    fix_id: str
    finding_id: str
    subject: str
    safety: str
    why: str
    steps: List[Any] = field(default_factory=list)
    env: Dict[str, str] = field(default_factory=dict)  # for the env file users source
    notes: List[str] = field(default_factory=list)
    modules: List[str] = field(default_factory=list)  # module dirs the proof warms up
    manual: bool = False  # advice only: fidoctor changes nothing for it

    @property
    def changes_something(self) -> bool:
        return bool(self.steps or self.env)

    def to_dict(self) -> Dict[str, Any]:
        return {"fix": self.fix_id, "finding": self.finding_id, "subject": self.subject,
                "safety": self.safety, "why": self.why, "env": self.env,
                "notes": self.notes, "manual": self.manual,
                "steps": [s.describe() for s in self.steps]}


@dataclass(frozen=True)
class Fixer:
    id: str
    plan: Callable[[Finding, FixContext], Plan]
    safety: str
    doc: str
    module: str
    findings: Tuple[str, ...] = ()


@lru_cache(maxsize=1)
def all_fixes() -> Dict[str, Fixer]:
    out: Dict[str, Fixer] = {}
    for mod in plugin_modules(__name__, __path__, "plan"):
        out[mod.ID] = Fixer(mod.ID, mod.plan, getattr(mod, "SAFETY", "caution"),
                            (mod.__doc__ or "").strip(), mod.__name__,
                            tuple(getattr(mod, "FINDINGS", ())))
    return out


def candidates(finding: Finding, prefer: Sequence[str] = ()) -> List[str]:
    """Fix ids to try, in order: ``--use`` ids, fixes owning this finding id, the probe's."""
    registry = all_fixes()
    own = [f.id for f in finding.fixes if f.id]
    owners = [fx.id for fx in registry.values() if finding.id in fx.findings]
    order = [p for p in prefer if p in own or p in owners] + owners + own
    return list(dict.fromkeys(order))


def choose(finding: Finding, ctx: FixContext,
           prefer: Sequence[str] = ()) -> Tuple[Optional[Plan], List[str]]:
    """The first applicable fix of ``finding`` (the probe lists its fixes safest first).

    Returns the plan (or None) and why each fix tried before it was declined.
    """
    registry = all_fixes()
    declined: List[str] = []
    for fid in candidates(finding, prefer):
        fixer = registry.get(fid)
        if fixer is None:
            declined.append(f"{fid}: not implemented by this fidoctor")
            continue
        try:
            return fixer.plan(finding, ctx), declined
        except NotApplicable as e:
            declined.append(f"{fid}: {e}")
    return None, declined
