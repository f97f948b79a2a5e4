"""From a diagnosis to a plan: pick a fix per finding, merge steps, render it.

Kept apart from the command so it is plain, testable code: ``make_plans`` is
pure apart from the fixes' own read-only look at the disk (fingerprints).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from fidoctor.fixes import FixContext, Plan, choose
from fidoctor.fixes._envfile import env_path, env_step
from fidoctor.model import Finding


@dataclass
class FixPlan:
    plans: List[Plan] = field(default_factory=list)
    unaddressed: List[Tuple[Finding, str]] = field(default_factory=list)
    steps: List[Any] = field(default_factory=list)
    env_lines: List[str] = field(default_factory=list)
    env: Dict[str, str] = field(default_factory=dict)

    @property
    def to_apply(self) -> List[Plan]:
        return [p for p in self.plans if p.changes_something and not p.manual]


def _step_key(step: Any) -> Tuple[str, str]:
    d = step.__dict__
    return (step.kind, str(d.get("src") or d.get("path") or sorted(d.get("pids") or [])))


def select(findings: Sequence[Finding], only: Sequence[str], skip: Sequence[str]) -> List[Finding]:
    """Problems (errors, warnings) the user asked for; info findings are never fixed."""
    out = []
    for f in findings:
        if not f.is_problem or (only and f.id not in only) or f.id in skip:
            continue
        out.append(f)
    return out


def outside_target(f: Finding, root: str) -> Optional[str]:
    """Why ``f`` names a path outside the target's FlashInfer cache (None: it does not).

    The process table is the whole machine's: a stuck build in someone else's
    cache (another user, another venv's workspace) shows up too, but
    ``fidoctor fix`` acts only on the target it was pointed at.
    """
    real_root = os.path.realpath(root).rstrip("/") + "/"
    for key in ("module_dir", "lock_path"):
        p = f.data.get(key)
        if not p or os.path.realpath(p).startswith(real_root):
            continue
        if os.path.normpath(p).startswith(os.path.normpath(root).rstrip("/") + "/"):
            return (f"a symlink leads {p} out of the target's cache (to {os.path.realpath(p)}); "
                    "fidoctor does not follow symlinks out of the path it changes")
        return f"{p} is outside the target's cache {root}; left alone"
    return None


def make_plans(findings: Sequence[Finding], ctx: FixContext,
               prefer: Sequence[str] = ()) -> FixPlan:
    fp = FixPlan()
    seen: Dict[Tuple[str, str], str] = {}
    for f in findings:
        if f.caused_by:
            fp.unaddressed.append((f, f"held back: caused by {f.caused_by}, which must be fixed "
                                   f"first (fidoctor fix --only {f.caused_by}); run fidoctor "
                                   "fix again once it is gone"))
            continue
        away = outside_target(f, ctx.flashinfer_root) if ctx.flashinfer_root else None
        if away:
            fp.unaddressed.append((f, away))
            continue
        plan, declined = choose(f, ctx, prefer)
        if plan is None:
            why = "; ".join(declined) if declined else "no automatic fix for this finding"
            fp.unaddressed.append((f, why))
            continue
        plan.notes.extend(f"passed over {d}" for d in declined)
        fresh = []
        for s in plan.steps:
            k = _step_key(s)
            if k in seen:
                plan.notes.append(f"{s.describe()}: already planned for {seen[k]}")
            else:
                seen[k] = f"{f.id} {f.subject}".strip()
                fresh.append(s)
        plan.steps = fresh
        fp.plans.append(plan)
        if not plan.manual:
            fp.env.update(plan.env)
    for p in fp.plans:
        if not p.manual:
            fp.steps.extend(p.steps)
    step, fp.env_lines = env_step(ctx.state, fp.env)
    if step is not None:
        fp.steps.append(step)
    return fp


def render(fp: FixPlan, state: str) -> str:
    out: List[str] = []
    for i, p in enumerate(fp.plans, 1):
        kind = "advice only, nothing changed automatically" if p.manual else p.safety
        out.append(f"{i}. {p.finding_id}  {p.subject}")
        out.append(f"   fix: {p.fix_id} ({kind})")
        out.append(f"   why: {p.why}")
        for s in p.steps:
            out.append(f"   - {s.describe()}")
        for k, v in sorted(p.env.items()):
            out.append(f"   - set {k}={v} in {env_path(state)}")
        for n in p.notes:
            out.append(f"   note: {n}")
    for f, why in fp.unaddressed:
        out.append(f"-  {f.id}  {f.subject}: not fixed automatically ({why})")
    if fp.env_lines:
        out.append("")
        out.append(f"environment for the server (written to {env_path(state)}):")
        out += [f"   {line}" for line in fp.env_lines]
    return "\n".join(out)
