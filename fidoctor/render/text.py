"""Human output: findings grouped by severity, each with evidence and fix commands.

Shaped to be pasted into a bug report: plain text, no colour off a TTY, the
full module names and paths in evidence, one fix command per line.
"""

from __future__ import annotations

from typing import List

from fidoctor import __version__
from fidoctor.diagnosis import Diagnosis, target_summary
from fidoctor.model import Finding
from fidoctor.render.style import Styler
from fidoctor.textsafe import shown


def _target_lines(diag: Diagnosis) -> List[str]:
    t = target_summary(diag.snapshot)
    if diag.snapshot.context.get("log_only") and not t["python"]:
        return ["target: this machine was not looked at (--log-only: the logs alone)"]
    bits = [f"{t['python']} ({t['source']})"]
    if t["python_version"]:
        bits.append(f"Python {t['python_version']}")
    if t["torch"]:
        bits.append(f"torch {t['torch']}" + (f" (CUDA {t['torch_cuda']})" if t["torch_cuda"] else ""))
    if t["flashinfer"]:
        bits.append(f"flashinfer-python {t['flashinfer']}")
    if t["cuda_runtime"]:
        bits.append(f"pip CUDA runtime {t['cuda_runtime']}")
    lines = ["target: " + " · ".join(bits)]
    lines += machine_lines(t)
    cache = diag.snapshot.data("cache")
    wss = cache.get("workspaces", [])
    n = sum(len(w.get("modules", [])) for w in wss)
    lines.append(f"cache:  {t['flashinfer_root']} ({len(wss)} workspace(s), {n} module(s))")
    return lines


def machine_lines(t: dict) -> List[str]:
    """``gpu:`` and ``compiler:`` header lines from target_summary (nothing if not gathered)."""
    out = []
    g = t.get("gpu")
    if g is not None:
        if g["gpus"]:
            names = sorted({f"{d['name']}" + (f" (sm {d['compute_cap']})" if d["compute_cap"] else "")
                            for d in g["gpus"]})
            bits = [f"{len(g['gpus'])} × {', '.join(names)}"]
        else:
            bits = ["no GPU seen"]
        if g["driver_version"]:
            bits.append(f"driver {g['driver_version']}"
                        + (f" (CUDA {g['cuda_driver_version']})" if g["cuda_driver_version"] else ""))
        elif g["cuda_driver_version"]:
            bits.append(f"driver supports CUDA {g['cuda_driver_version']}")
        if not g["present"]:
            bits.append("no NVIDIA driver (no nvidia-smi, /proc/driver/nvidia, libcuda.so.1)")
        out.append("gpu:    " + " · ".join(bits))
    hc = t.get("host_compiler")
    if hc is not None:
        bits = []
        for role, label in (("nvcc_host", "nvcc host"), ("cxx", "c++")):
            c = hc[role]
            how = "-ccbin $CC" if c["source"] == "CC" else ("$CXX" if c["source"] == "CXX" else "PATH")
            what = f"{c['family']} {c['version']}" if c["version"] else "not found" if not c["path"] \
                else "version unknown"
            bits.append(f"{label} {c['path'] or c['command']} ({what}, {how})")
        out.append("compiler: " + " · ".join(bits))
    return out


def finding_lines(f: Finding, s: Styler) -> List[str]:
    """One finding as diagnose prints it: title line, evidence, fixes with their commands."""
    out = [f"{s.severity(f.severity)}  {s(f.id, bold=True)}  {f.title}"]
    if f.caused_by:
        out.append(f"    caused by {f.caused_by} (fix that first)")
    for e in f.evidence:
        out.append(f"    - {e}")
    for fix in f.fixes:
        out.append(f"  fix ({fix.safety}): {fix.description}")
        for c in fix.commands:
            out.append(f"      {c}" if c.startswith("#") else f"      $ {c}")
    out.append(f"  docs: fidoctor explain {f.id}")
    return out


def render(diag: Diagnosis, s: Styler) -> str:
    lines = [s(f"fidoctor {__version__} — FlashInfer JIT diagnosis", bold=True)]
    try:
        lines += [shown(x) for x in _target_lines(diag)]  # machine strings: no raw controls
    except (TypeError, AttributeError, ValueError, KeyError):  # a damaged --from snapshot
        lines.append("target: not shown: the snapshot's data has an unexpected shape")
    lines.append("")
    if not diag.findings:
        lines.append("No findings.")
    for f in diag.findings:  # severity first, each symptom right after its cause
        lines += finding_lines(f, s)
        lines.append("")
    for inc in diag.inconclusive:
        lines.append(f"inconclusive: {inc.probe}: {inc.reason}")
    bad = [f"{n} ({sec.status}: {sec.error})" for n, sec in diag.snapshot.sections.items()
           if not sec.ok]
    if bad:
        lines.append(shown("not gathered: " + "; ".join(bad)))
    lines.append(summary_line(diag))
    return "\n".join(lines)


def summary_line(diag: Diagnosis) -> str:
    """The verdict line (all ``diagnose -q`` prints)."""
    c = diag.counts()
    line = f"summary: {c['error']} error(s), {c['warning']} warning(s), {c['info']} info — " \
        f"{diag.verdict}"
    if diag.exit_code == 0 and diag.inconclusive:  # healthy only for what was judged
        ids = list(dict.fromkeys(i.probe for i in diag.inconclusive))
        line += shown(f" for what was judged; {len(ids)} check(s) inconclusive: "
                      + ", ".join(ids[:5]) + (f" (+{len(ids) - 5} more)" if len(ids) > 5 else ""))
    return line


def verbose_lines(diag: Diagnosis) -> List[str]:
    """``diagnose -v``: how the target was chosen, and each section's gather time and status."""
    ctx = diag.snapshot.context
    raw = ctx.get("extra")
    extra: dict = raw if isinstance(raw, dict) else {}
    out = []
    auto = extra.get("pid_auto")
    if auto:
        out.append(f"--pid auto: chose {auto['chosen']}: " + "; ".join(auto.get("why") or []))
        for o in auto.get("others") or []:
            out.append(f"  also seen: {o['pid']}: " + "; ".join(o.get("why") or []))
    for e in (extra.get("interpreter") or {}).get("evidence") or []:
        out.append(f"interpreter: {e}")
    for name, sec in diag.snapshot.sections.items():
        out.append(f"gather: {name:<14} {sec.status:<8} {sec.elapsed_s:7.3f} s"
                   + (f"  {sec.error}" if sec.error else ""))
    return [shown(x) for x in out]
