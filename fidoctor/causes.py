"""Cause before symptom: link a module's trouble to the finding that explains it.

Why: a module left half-built by a read-only cache, a full disk or the OOM
killer shows up as ``cache-incomplete-module`` / ``jit-log-unfinished`` /
``warmup-build-failed``. Offering to move that module aside and rebuild it
sends the user into the same error again; the cause has to be fixed first.

The protocol (a contract between probes):
- a *cause* probe module sets ``CAUSE = True``; each of its problem findings
  carries ``data["affects"]``: module names, module or workspace dirs
  (absolute paths: everything under them), or ``["*"]`` for every build;
- ``link`` (run by diagnosis after every probe, and by warmup over its own
  verdicts) sets ``caused_by`` on each symptom finding of an affected module,
  adds an evidence line, and holds back its rebuild/quarantine fixes
  (kept in ``data["held_fixes"]``) behind one "fix the cause first" step;
- ``causal_order`` puts each symptom right after its cause, so diagnose,
  report and fix all show (and ``fix`` applies) the cause first.
"""

from __future__ import annotations

import os
from typing import Dict, Iterable, List, Optional, Sequence

from fidoctor.model import SEVERITIES, Finding, Fix, sort_key

SYMPTOMS = ("jit-log-unfinished", "cache-incomplete-module", "warmup-build-failed")


def _module_of(f: Finding) -> tuple:
    name = f.data.get("module") or ""
    mdir = f.data.get("module_dir") or ""
    if not name and mdir:
        name = os.path.basename(os.path.normpath(mdir))
    return str(name), os.path.normpath(str(mdir)) if mdir else ""


def affects(cause: Finding, symptom: Finding) -> bool:
    """Whether ``cause``'s ``data["affects"]`` covers ``symptom``'s module."""
    targets = cause.data.get("affects") or []
    name, mdir = _module_of(symptom)
    for t in targets:
        t = str(t)
        if t == "*":
            return True
        if t.startswith("/"):
            base = os.path.normpath(t)
            if mdir and (mdir == base or mdir.startswith(base.rstrip("/") + "/")):
                return True
        elif name and t == name:
            return True
    return False


def _rank(f: Finding) -> tuple:
    return (SEVERITIES.index(f.severity),) + sort_key(f)[1:]


def link(findings: Sequence[Finding], cause_ids: Iterable[str]) -> None:
    """Set ``caused_by`` on symptoms explained by a cause finding (in place)."""
    ids = set(cause_ids)
    causes = sorted((f for f in findings if f.id in ids and f.is_problem
                     and f.data.get("affects")), key=_rank)
    if not causes:
        return
    for s in findings:
        if s.id not in SYMPTOMS or s.caused_by:
            continue
        mine = [c for c in causes if affects(c, s)]
        if not mine:
            continue
        first = mine[0]
        s.caused_by = first.id
        also = sorted({c.id for c in mine[1:]} - {first.id})
        s.evidence.append(f"caused by {first.id}: {first.title}"
                          + (f" (also: {', '.join(also)})" if also else ""))
        hold(s, first)


def hold(symptom: Finding, cause: Finding) -> None:
    """Replace the symptom's own fixes by one step: fix the cause first."""
    if symptom.fixes:
        symptom.data["held_fixes"] = [
            {"id": f.id, "description": f.description, "commands": list(f.commands),
             "safety": f.safety} for f in symptom.fixes]
    first = cause.fixes[0] if cause.fixes else None
    if first is None:  # nothing to apply: a command would send the user to an empty plan
        how, commands = (f"{cause.id} offers no fix here; its evidence says what to look "
                         "at"), []
    elif not first.id and first.commands:
        how, commands = f"{cause.id}: {first.description}", list(first.commands)
    else:  # fidoctor can apply it, or the cause offers no command: send the user to fix
        how, commands = cause.id, [f"fidoctor fix --only {cause.id}"]
    symptom.fixes = [Fix(
        description=f"Fix the cause first ({how}); rebuilding or moving this module "
        "before that fails the same way. Once it is fixed, the next start rebuilds the "
        "module (or fidoctor fix offers its own fix again)",
        # the step is the cause's first fix, so it carries that fix's grade
        commands=commands, safety=first.safety if first is not None else "caution")]


def causal_order(findings: Sequence[Finding]) -> List[Finding]:
    """``findings`` in their given order, with every symptom moved right after its cause."""
    by_id: Dict[str, List[Finding]] = {}
    caused: List[Finding] = []
    rest: List[Finding] = []
    for f in findings:
        if f.caused_by and any(g.id == f.caused_by for g in findings if g is not f):
            caused.append(f)
            by_id.setdefault(f.caused_by, []).append(f)
        else:
            rest.append(f)
    out: List[Finding] = []
    placed: set = set()
    for f in rest:
        out.append(f)
        if f.id in by_id and f.id not in placed:
            placed.add(f.id)
            out.extend(by_id[f.id])
    return out


def cause_of(f: Finding, findings: Sequence[Finding]) -> Optional[Finding]:
    return next((g for g in findings if f.caused_by and g.id == f.caused_by), None)
