"""``fidoctor cache verify``: would the target rebuild each module, and would it load?

Rebuild: the target's own ninja, dry run (``ninja -n -d explain``, no command
run, nothing written; fidoctor.flashinfer.ninja.explain), per module under a
budget, never from a cache (a reinstall changes source mtimes that no cache
key sees): 0 edges to run is the only pass.
Load: every check diagnose makes, by running diagnose's probes over a snapshot
of the target (CUDA runtime symbols against the libcudart the target loads,
an unreadable or truncated ``.so``, and whatever ELF probes exist: torch ABI,
arch) and keeping the findings about these modules. Nothing is re-implemented
here.

Verdict per module: ``ok``, ``rebuild`` (ninja would run edges), ``broken``
(an error or warning finding), ``unchecked`` (ninja timed out or failed, the
budget ran out). Exit 0 every module ok; 1 any rebuild or broken; 2 nothing
to verify, or something left unchecked (never "ok" for what was not checked).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from fidoctor import __version__
from fidoctor.cachebundle.export import module_names
from fidoctor.cachebundle.target import Target
from fidoctor.errors import FidoctorError
from fidoctor.textsafe import shown

PER_MODULE_S = 10.0
PARALLEL = 4
REBUILD_IDS = ("cache-rebuild-pending",)  # findings that mean "would rebuild", not "broken"
EXIT_OK, EXIT_PROBLEMS, EXIT_FAILED = 0, 1, 2
SCHEMA_VERSION = 1


@dataclass
class ModuleVerdict:
    name: str
    path: str
    verdict: str = "unchecked"
    rebuild: Dict[str, Any] = field(default_factory=dict)
    findings: List[Dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "path": self.path, "verdict": self.verdict,
                "rebuild": self.rebuild, "findings": self.findings}


@dataclass
class VerifyResult:
    target: Target
    workspace: str
    modules: List[ModuleVerdict] = field(default_factory=list)
    other_findings: List[Dict[str, Any]] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    def counts(self) -> Dict[str, int]:
        out = {"ok": 0, "rebuild": 0, "broken": 0, "unchecked": 0}
        for m in self.modules:
            out[m.verdict] += 1
        return out

    @property
    def exit_code(self) -> int:
        c = self.counts()
        if c["rebuild"] or c["broken"]:
            return EXIT_PROBLEMS
        if c["unchecked"] or not self.modules:
            return EXIT_FAILED
        return EXIT_OK

    def to_json(self) -> Dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "fidoctor_version": __version__,
                "target": self.target.to_dict(), "workspace": self.workspace,
                "modules": [m.to_dict() for m in self.modules],
                "other_findings": self.other_findings, "notes": self.notes,
                "summary": dict(self.counts(), modules=len(self.modules),
                                elapsed_s=round(self.elapsed_s, 3), exit_code=self.exit_code)}


def _rebuild(mdir: str, ninja: str, timeout: float) -> Dict[str, Any]:
    from fidoctor.flashinfer.ninja import explain

    r = dict(explain(mdir, ninja=ninja, timeout=timeout, cache=None))
    r.pop("cached", None)
    return r


def _finding_modules(f: Any, names: List[str], ws: str) -> List[str]:
    """The verified modules a finding is about (by name, list of names, or path)."""
    d = f.data or {}
    out = [d[k] for k in ("module", "name") if d.get(k) in names]
    for k in ("modules", "affects"):
        if isinstance(d.get(k), list):
            out += [n for n in d[k] if n in names]
    for key in ("module_dir", "so_path", "so", "path"):
        p = d.get(key)
        if isinstance(p, str):
            out += [n for n in names if p == os.path.join(ws, "cached_ops", n)
                    or p.startswith(os.path.join(ws, "cached_ops", n) + os.sep)]
    if f.subject in names:
        out.append(f.subject)
    return sorted(set(out))


def verify(ctx: Any, arch: Optional[str], wanted: Optional[List[str]] = None,
           budget_s: float = 60.0) -> VerifyResult:
    """One snapshot of the target (facts and diagnose's probes), then ninja per module."""
    from fidoctor.cachebundle.target import from_snapshot
    from fidoctor.diagnosis import diagnose
    from fidoctor.snapshot.runner import gather_snapshot

    t0 = time.monotonic()
    snap = gather_snapshot(ctx)
    t = from_snapshot(snap, ctx.env, arch)
    t.require_usable("verify")
    assert t.workspace and t.ninja
    ws = os.path.realpath(t.workspace)
    res = VerifyResult(target=t, workspace=ws)
    names = module_names(ws, wanted)
    if not names:
        raise FidoctorError(f"nothing to verify: no compiled modules in {ws}",
                            "import a bundle first: fidoctor cache import BUNDLE")
    deadline = t0 + budget_s
    ninja = t.ninja

    def one(n: str) -> ModuleVerdict:
        mv = ModuleVerdict(n, os.path.join(ws, "cached_ops", n))
        left = deadline - time.monotonic()
        if left <= 0.05:
            mv.rebuild = {"status": "skipped", "error": f"budget of {budget_s:g} s spent"}
        else:
            mv.rebuild = _rebuild(mv.path, ninja, min(PER_MODULE_S, left))
        return mv

    # Each dry run is a child process with its own deadline; a few at once.
    with ThreadPoolExecutor(max_workers=max(1, min(PARALLEL, len(names)))) as pool:
        res.modules = list(pool.map(one, names))
    diag = diagnose(snap)
    by_name = {m.name: m for m in res.modules}
    for f in diag.findings:
        owners = _finding_modules(f, names, ws)
        brief = {"id": f.id, "severity": f.severity, "title": f.title}
        for owner in owners:
            by_name[owner].findings.append(brief)
        if not owners and f.is_problem:
            res.other_findings.append(brief)
    for i in diag.inconclusive:
        res.notes.append(f"diagnose could not run {i.probe}: {i.reason}")
    for m in res.modules:
        rb = m.rebuild
        problems = [f for f in m.findings if f["severity"] in ("error", "warning")]
        if any(f["id"] not in REBUILD_IDS for f in problems):
            m.verdict = "broken"
        elif problems or (rb.get("status") == "ok" and rb.get("work", 0) > 0):
            m.verdict = "rebuild"
        elif rb.get("status") == "ok":
            m.verdict = "ok"
        else:
            m.verdict = "unchecked"
    res.elapsed_s = time.monotonic() - t0
    return res


def render(res: VerifyResult) -> str:
    lines = [f"fidoctor cache verify: {res.workspace}",
             f"target: {res.target.python} · flashinfer {res.target.flashinfer_version} · "
             f"CUDA {res.target.toolkit_version} (cuda_home={res.target.cuda_home}) · "
             f"ninja {res.target.ninja_version}"]
    for m in res.modules:
        rb = m.rebuild
        if rb.get("status") == "ok":
            what = ("0 edges to rebuild" if not rb.get("work")
                    else f"{rb['work']} edge(s) to rebuild")
        else:
            what = f"rebuild check {rb.get('status')}: {rb.get('error', '')}"
        lines.append(f"  {m.verdict.upper():9} {m.name}: {what}")
        for line in rb.get("first", [])[:3] if rb.get("work") else []:
            lines.append(f"      {line}")
        for f in m.findings:
            lines.append(f"      {f['severity']} {f['id']}: {f['title']}")
    for f in res.other_findings:
        lines.append(f"  also: {f['severity']} {f['id']}: {f['title']} (fidoctor diagnose)")
    for n in res.notes:
        lines.append(f"  note: {n}")
    c = res.counts()
    lines.append(f"{len(res.modules)} module(s): {c['ok']} ok, {c['rebuild']} would rebuild, "
                 f"{c['broken']} would not load, {c['unchecked']} unchecked "
                 f"({res.elapsed_s:.2f} s)")
    return "\n".join(shown(line) for line in lines)  # names can hold control characters
