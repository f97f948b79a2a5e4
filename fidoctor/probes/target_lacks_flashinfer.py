"""target-lacks-flashinfer: fidoctor looked at an interpreter without FlashInfer, yet FlashInfer is here.

What: no ``--python``/``--pid`` was given, the interpreter fidoctor chose
(the active venv, else its own) has no FlashInfer, but this machine has a
FlashInfer cache, a live serving process (maps libtorch or a FlashInfer
module, runs sglang/vLLM, or builds), or an environment whose site-packages
hold FlashInfer. Why: installed as the README says (its own venv, pipx,
``uv tool``) fidoctor's default target is itself; every target-side check
(torch, FlashInfer's version and cache layout, pip's CUDA runtime) then
describes the wrong patient, and "healthy" would be a lie.
Fix: rerun on the real target: ``fidoctor diagnose --pid <server pid>`` for a
live server, ``fidoctor diagnose --python <venv>/bin/python`` for an
environment; the finding lists the candidates found, with their commands.

``data`` keys: python (the target diagnosed), cache_modules, servers
([{pid, python, reasons}]), venvs ([{python, flashinfer}]).
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List

from fidoctor.model import Finding, Fix
from fidoctor.probes._facts import quote
from fidoctor.snapshot import Snapshot

ID = "target-lacks-flashinfer"
REQUIRES = ("target", "serving")
MAX_LISTED = 5


def has_flashinfer(t: Dict[str, Any]) -> bool:
    pkgs = t.get("packages") or {}
    return "flashinfer-python" in pkgs or "flashinfer" in pkgs or "flashinfer" in (
        t.get("modules") or {})


def candidates(snap: Snapshot) -> Dict[str, Any]:
    """What the ``serving`` and ``cache`` sections saw (empty when the target was named)."""
    s = snap.data("serving")
    cache = snap.data("cache")
    modules = sum(len(w.get("modules") or []) for w in cache.get("workspaces") or [])
    return {"explicit": bool(s.get("explicit")), "servers": list(s.get("servers") or []),
            "venvs": list(s.get("venvs") or []), "cache_root": cache.get("root"),
            "cache_modules": modules, "cache_workspaces": len(cache.get("workspaces") or [])}


def check(snap: Snapshot) -> Iterable[Finding]:
    t = snap.data("target")
    if not t.get("usable") or has_flashinfer(t):
        return
    c = candidates(snap)
    if c["explicit"]:
        return
    if not (c["servers"] or c["venvs"] or c["cache_workspaces"]):
        return
    python = str(t.get("python"))
    source = snap.context.get("python_source") or "default"
    evidence = [f"diagnosed {python} ({source}): no flashinfer-python"]
    if c["cache_workspaces"]:
        evidence.append(f"FlashInfer cache {c['cache_root']}: {c['cache_workspaces']} "
                        f"workspace(s), {c['cache_modules']} module(s)")
    commands: List[str] = []
    for srv in c["servers"][:MAX_LISTED]:
        evidence.append(f"live server pid {srv.get('pid')} ({(srv.get('cmdline') or '')[:100]}): "
                        + "; ".join(srv.get("reasons") or [])
                        + (f"; runs {srv['python']}" if srv.get("python") else ""))
        commands.append(f"fidoctor diagnose --pid {srv.get('pid')}")
    for v in c["venvs"][:MAX_LISTED]:
        evidence.append(f"{v.get('kind', 'environment')} {v.get('prefix')} has flashinfer "
                        f"{v.get('flashinfer')} ({v.get('where')})")
        commands.append(f"fidoctor diagnose --python {quote(str(v.get('python')))}")
    if not commands:
        commands = ["fidoctor diagnose --python /path/to/serving-venv/bin/python",
                    "fidoctor diagnose --pid auto"]
    n = len(c["servers"]) + len(c["venvs"])
    what = f"{n} candidate(s) found" if n else "a FlashInfer cache exists"
    yield Finding(
        id=ID,
        severity="warning",
        title=f"diagnosed an interpreter without FlashInfer ({python}), but {what}: "
              "point fidoctor at the serving environment",
        subject=python,
        evidence=evidence,
        fixes=[Fix(description="Diagnose the serving environment instead (the first is the "
                               "likeliest)", commands=commands)],
        data={"python": python, "cache_modules": c["cache_modules"],
              "servers": [{"pid": s.get("pid"), "python": s.get("python"),
                           "reasons": s.get("reasons")} for s in c["servers"]],
              "venvs": [{"python": v.get("python"), "flashinfer": v.get("flashinfer")}
                        for v in c["venvs"]]},
    )
