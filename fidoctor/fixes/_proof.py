"""Proof that a fix worked: re-diagnose, warm the affected modules, compare.

The second diagnosis runs with the environment the fix tells the user to use
(the env file's variables applied), so a process-scoped fix is judged the way
the server will see it. The warmup is the guarded runner of fidoctor.warmup;
when that module is not available the proof says so and relies on the
diagnosis alone.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

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
        if key in addressed:
            state = "still there" if key in now else "gone"
            if key in now:
                proof.remaining.append(key)
        else:
            state = "still there (not addressed)" if key in now else "gone"
        proof.rows.append((f.id, f.subject, f.severity, state))
    before_keys = {(f.id, f.subject) for f in before}
    for f in after:
        if (f.id, f.subject) not in before_keys:
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


def run_warmup(python: str, env: Dict[str, str], modules: List[str]) -> Tuple[Optional[str], bool]:
    """Call fidoctor.warmup.run_warmup if it exists; (verdict line, ok)."""
    try:
        from fidoctor.warmup import run_warmup as warm  # type: ignore[attr-defined]
    except ImportError:
        return ("skipped: fidoctor.warmup is not available in this fidoctor; "
                "the proof rests on the diagnosis", True)
    params = inspect.signature(warm).parameters
    offer: Dict[str, Any] = {"python": python, "env": env, "modules": modules,
                             "module_dirs": modules}
    kwargs = {k: v for k, v in offer.items() if k in params}
    try:
        res = warm(**kwargs)
    except Exception as e:  # noqa: BLE001 - the proof reports, it does not crash
        return f"failed to run: {type(e).__name__}: {e}", False
    ok = bool(getattr(res, "ok", res if isinstance(res, bool) else True))
    text = getattr(res, "summary", None) or getattr(res, "message", None) or ("ok" if ok
                                                                             else "failed")
    return (text() if callable(text) else str(text)), ok
