"""Run every probe over a snapshot and collect the verdict.

Exit codes (a contract): 0 no finding at or above ``fail_on`` (default
warning), 1 at least one, 2 fidoctor could not do its job: raised as
FidoctorError before we get here, or the JIT probes could not run at all
(``unchecked``), which is never reported as healthy.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from fidoctor import __version__
from fidoctor.causes import causal_order, link
from fidoctor.model import Finding, Inconclusive, ProbeInconclusive, sort_key
from fidoctor.probes import all_probes, cause_ids
from fidoctor.snapshot import SCHEMA_VERSION, Snapshot

EXIT_HEALTHY, EXIT_PROBLEMS, EXIT_FAILED = 0, 1, 2
FAIL_ON = ("error", "warning")
# Sections whose probes judge FlashInfer's JIT itself: if none of those probes ran, nothing
# about the JIT was checked.
JIT_SECTIONS = ("cache", "jitlog", "processes")


@dataclass
class Diagnosis:
    snapshot: Snapshot
    findings: List[Finding] = field(default_factory=list)
    inconclusive: List[Inconclusive] = field(default_factory=list)
    fail_on: str = "warning"
    not_checked: Optional[str] = None  # set by a caller that knows the JIT was not checked

    @property
    def exit_code(self) -> int:
        failing = ("error",) if self.fail_on == "error" else ("error", "warning")
        if any(f.severity in failing for f in self.findings):
            return EXIT_PROBLEMS
        return EXIT_FAILED if self.unchecked else EXIT_HEALTHY

    @property
    def verdict(self) -> str:
        """One phrase: healthy, problems found, or why nothing could be checked."""
        code = self.exit_code
        if code == EXIT_PROBLEMS:
            return "problems found"
        if code == EXIT_FAILED:
            return f"not checked: {self.unchecked}"
        ignored = sum(1 for f in self.findings if f.severity == "warning")
        return f"healthy ({ignored} warning(s) ignored by --fail-on error)" if ignored else "healthy"

    @property
    def unchecked(self) -> Optional[str]:
        """Why the JIT could not be checked (None when it was): then the verdict is exit 2."""
        snap = self.snapshot
        if self.not_checked:
            return self.not_checked
        if snap.context.get("log_only"):
            return _logs_unread(snap)
        if not snap.sections:
            return "the snapshot holds no sections: nothing was gathered"
        if any(f.id == "target-lacks-flashinfer" for f in self.findings):
            return "the target interpreter has no FlashInfer (see target-lacks-flashinfer)"
        if any(f.id == "flashinfer-not-installed" for f in self.findings):
            return ("the target interpreter has no FlashInfer and there is no FlashInfer cache "
                    "(see flashinfer-not-installed)")
        skipped = _not_scanned(snap)
        if skipped:
            return skipped
        jit = {p.id for p in all_probes() if set(p.requires) & set(JIT_SECTIONS)}
        stuck = [i for i in self.inconclusive if i.probe in jit]
        if jit and {i.probe for i in stuck} >= jit:
            reasons = list(dict.fromkeys(i.reason for i in stuck))
            return "every JIT probe was inconclusive (" + "; ".join(reasons[:3]) + ")"
        return None

    def counts(self) -> Dict[str, int]:
        out = {"error": 0, "warning": 0, "info": 0}
        for f in self.findings:
            out[f.severity] += 1
        return out

    def to_json(self) -> Dict[str, Any]:
        from fidoctor.fleet.facts import node_facts

        return {
            "schema_version": SCHEMA_VERSION,
            "fidoctor_version": __version__,
            "taken_at": self.snapshot.taken_at,
            "target": target_summary(self.snapshot),
            "node": node_facts(self.snapshot),
            "findings": [f.to_dict() for f in self.findings],
            "inconclusive": [i.to_dict() for i in self.inconclusive],
            "gather": {
                name: {"status": s.status, "elapsed_s": s.elapsed_s, "error": s.error}
                for name, s in self.snapshot.sections.items()
            },
            "summary": dict(self.counts(), exit_code=self.exit_code, fail_on=self.fail_on,
                            unchecked=self.unchecked, verdict=self.verdict),
        }


def _version(pkgs: Dict[str, Any], *names: str) -> Optional[str]:
    for n in names:
        if n in pkgs:
            v = pkgs[n].get("version") if isinstance(pkgs[n], dict) else None
            return v if isinstance(v, str) else None
    return None


def _extra(ctx: Dict[str, Any]) -> Dict[str, Any]:
    extra = ctx.get("extra")
    return extra if isinstance(extra, dict) else {}


def _not_scanned(snap: Snapshot) -> Optional[str]:
    """The cache gatherer ran out of time: which module dirs were never looked at."""
    n, where = 0, []
    wss = snap.data("cache").get("workspaces")
    for ws in wss if isinstance(wss, list) else []:
        left = ws.get("not_scanned") if isinstance(ws, dict) else None
        if isinstance(left, dict) and isinstance(left.get("count"), int) and left["count"]:
            n += left["count"]
            where.append(str(ws.get("path")))
    if not n:
        return None
    return (f"{n} module dir(s) in {', '.join(where[:2])} were not scanned within the cache "
            "budget (the newest were scanned first); run fidoctor diagnose again when the "
            "machine is less busy")


def _logs_unread(snap: Snapshot) -> Optional[str]:
    """--log-only, and every log was cut before its first byte (a silent open pipe)."""
    sec = snap.section("serverlog")
    files = sec.data.get("files") if sec is not None and sec.ok else None
    if not isinstance(files, list) or not files or not all(
            isinstance(f, dict) and (not f.get("complete", True) and not f.get("bytes_read")
                                     or f.get("not_text") and not f.get("hits")
                                     and not f.get("anchor"))
            for f in files):
        return None
    return "no log was read: " + "; ".join(f"{f.get('path')} ({f.get('not_text') or f.get('stopped')})"
                                           for f in files[:3])


def _shaped(fn: Any, snap: Snapshot) -> Any:
    """``fn(snap)``, or None when a (hand-edited, damaged) snapshot has the wrong shapes."""
    try:
        return fn(snap)
    except (TypeError, AttributeError, ValueError, KeyError):
        return None


def target_summary(snap: Snapshot) -> Dict[str, Any]:
    """The interpreter diagnosed and the versions that matter, for every output format."""
    ctx = snap.context
    t = snap.section("target")
    tdata = t.data if t else {}
    pkgs = tdata.get("packages", {})
    if not isinstance(pkgs, dict) or not isinstance(tdata.get("torch", {}), dict):
        tdata, pkgs = {"usable": tdata.get("usable", False)}, {}  # damaged: show none of it
    return {
        "python": ctx.get("python"),
        "source": ctx.get("python_source"),
        "pid": ctx.get("pid"),
        "usable": tdata.get("usable", False),
        "python_version": tdata.get("version"),
        "torch": _version(pkgs, "torch") or tdata.get("torch", {}).get("version"),
        "torch_cuda": tdata.get("torch", {}).get("cuda"),
        "flashinfer": _version(pkgs, "flashinfer-python", "flashinfer"),
        "flashinfer_jit_cache": _version(pkgs, "flashinfer-jit-cache"),
        "flashinfer_cubin": _version(pkgs, "flashinfer-cubin"),
        "cuda_runtime": _version(
            pkgs, "nvidia-cuda-runtime-cu12", "nvidia-cuda-runtime-cu13", "nvidia-cuda-runtime-cu11",
            "nvidia-cuda-runtime"
        ),
        "flashinfer_root": ctx.get("flashinfer_root"),
        "interpreter": _extra(ctx).get("interpreter"),
        "pid_auto": _extra(ctx).get("pid_auto"),
        "gpu": _shaped(gpu_summary, snap),
        "host_compiler": _shaped(compiler_summary, snap),
    }


def gpu_summary(snap: Snapshot) -> Optional[Dict[str, Any]]:
    """GPUs, driver and its CUDA version (section ``gpu``); None when it was not gathered."""
    s = snap.section("gpu")
    if s is None or not s.ok:
        return None
    g = s.data
    return {
        "present": bool(g.get("present")),
        "gpus": [{"name": d.get("name"), "compute_cap": d.get("compute_cap")}
                 for d in g.get("gpus") or []],
        "driver_version": g.get("driver_version"),
        "cuda_driver_version": g.get("cuda_driver_version"),
        "libcuda": (g.get("libcuda") or {}).get("realpath"),
        "absent_reasons": list(g.get("absent_reasons") or []),
    }


def compiler_summary(snap: Snapshot) -> Optional[Dict[str, Any]]:
    """nvcc's host compiler and FlashInfer's C++ compiler; None when not gathered."""
    s = snap.section("host_compiler")
    if s is None or not s.ok:
        return None
    return {role: {k: (s.data.get(role) or {}).get(k)
                   for k in ("source", "command", "path", "family", "version")}
            for role in ("nvcc_host", "cxx")}


def diagnose(snap: Snapshot, fail_on: str = "warning") -> Diagnosis:
    """Apply every registered probe; a probe that crashes is inconclusive, not fatal."""
    diag = Diagnosis(snapshot=snap, fail_on=fail_on)
    log_only = bool(snap.context.get("log_only"))
    for probe in [] if log_only else all_probes():
        missing = [
            f"{r} ({s.status}{': ' + s.error if s.error else ''})" if s else f"{r} (not gathered)"
            for r in probe.requires
            for s in [snap.section(r)]
            if s is None or not s.ok
        ]
        if missing:
            diag.inconclusive.append(Inconclusive(probe.id, "missing facts: " + ", ".join(missing)))
            continue
        try:
            diag.findings.extend(list(probe.check(snap)))
        except ProbeInconclusive as e:
            diag.inconclusive.append(Inconclusive(probe.id, str(e)))
        except Exception as e:  # noqa: BLE001 - one broken probe must not sink the rest
            where = traceback.extract_tb(e.__traceback__)[-1]
            diag.inconclusive.append(
                Inconclusive(
                    probe.id,
                    f"probe failed ({type(e).__name__}: {e} at "
                    f"{where.filename.rsplit('/', 1)[-1]}:{where.lineno}); this is a fidoctor bug",
                )
            )
    from fidoctor.serverlog.merge import log_findings, log_gaps, merge

    diag.findings = merge(diag.findings, log_findings(snap))
    diag.inconclusive.extend(log_gaps(snap))
    diag.findings.sort(key=sort_key)
    link(diag.findings, cause_ids())
    diag.findings = causal_order(diag.findings)
    if not log_only:
        from fidoctor.targetargs import carry_target

        carry_target(diag.findings, snap)
    return diag
