"""Proof that a fix worked: re-diagnose, warm the affected modules, compare.

The second diagnosis runs with the environment the fix tells the user to use
(the env file's variables applied), so a process-scoped fix is judged the way
the server will see it. The warmup is the guarded runner of fidoctor.warmup;
when that module is not available the proof says so and relies on the
diagnosis alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from fidoctor.model import Finding

Key = Tuple[str, str]


@dataclass
class Proof:
    rows: List[Tuple[str, str, str, str]] = field(default_factory=list)  # id, subject, before, after
    remaining: List[Key] = field(default_factory=list)
    warmup: Optional[str] = None  # None: not run; else a one-line verdict
    warmup_ok: bool = True

    @property
    def ok(self) -> bool:
        return not self.remaining and self.warmup_ok


def compare(before: Sequence[Finding], after: Sequence[Finding],
            addressed: Sequence[Key]) -> Proof:
    now = {(f.id, f.subject) for f in after}
    proof = Proof()
    for f in before:
        key = (f.id, f.subject)
        if key not in addressed and not f.is_problem:
            continue  # info findings (e.g. someone else's build progressing) are not news
        if key in addressed:
            state = "still there" if key in now else "gone"
            if key in now:
                proof.remaining.append(key)
        else:
            state = "still there (not addressed)" if key in now else "gone"
        proof.rows.append((f.id, f.subject, f.severity, state))
    before_keys = {(f.id, f.subject) for f in before}
    for f in after:
        if (f.id, f.subject) not in before_keys and f.is_problem:
            proof.rows.append((f.id, f.subject, "-", f"new: {f.severity}"))
    return proof


def render(proof: Proof) -> str:
    if not proof.rows:
        return "proof: no findings before or after"
    w = max(len(r[0]) for r in proof.rows)
    lines = [f"proof: {'finding'.ljust(w)}  {'before':8}  after"]
    for fid, subject, before, after in proof.rows:
        lines.append(f"       {fid.ljust(w)}  {before:8}  {after}")
        if subject:
            lines.append(f"       {'':{w}}  {subject}")
    if proof.warmup is not None:
        lines.append(f"warmup: {proof.warmup}")
    return "\n".join(lines)


def run_warmup(python: str, env: Dict[str, str], modules: List[str],
               arch: Optional[str] = None) -> Tuple[Optional[str], bool]:
    """Warm the fixed modules through fidoctor.warmup's guarded runner; (verdict line, ok).

    Only modules the warmup knows how to build (names that parse into a spec)
    are passed; the others are named in the verdict.
    """
    import os

    try:
        from fidoctor.warmup import run_warmup as warm
        from fidoctor.warmup.specs import parse_spec
    except ImportError:
        return ("skipped: fidoctor.warmup is not available in this fidoctor; "
                "the proof rests on the diagnosis", True)
    names, unknown = [], []
    for m in modules:
        name = os.path.basename(m.rstrip("/"))
        try:
            parse_spec(name)
            names.append(name)
        except Exception:  # noqa: BLE001 - an unparseable name is just not warmed
            unknown.append(name)
    if not names:
        return (f"skipped: no module the warmup can build ({', '.join(unknown)[:200]})", True)
    try:
        res = warm(python=python, modules=",".join(names), env=dict(env), arch=arch)
    except Exception as e:  # noqa: BLE001 - the proof reports, it does not crash
        return f"could not run: {getattr(e, 'message', None) or e}", False
    counts: Dict[str, int] = {}
    for mr in res.modules:
        counts[mr.status] = counts.get(mr.status, 0) + 1
    text = ", ".join(f"{n} {st}" for st, n in sorted(counts.items()))
    if unknown:
        text += f"; not warmed (unknown to warmup): {', '.join(unknown)[:200]}"
    return f"{text} (exit {res.exit_code})", res.exit_code == 0
