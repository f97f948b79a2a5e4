"""Health-check outputs in the shapes schedulers already read: Slurm, Prometheus, NPD.

Why: a Slurm ``HealthCheckProgram``/prolog drains a node with a one-line
reason; Kubernetes' node-problem-detector runs a custom plugin and reads its
exit code (0 OK, 1 problem, anything else unknown) and first line;
node-exporter's textfile collector scrapes ``*.prom`` files. Each function
returns ``(text, exit_code)``; the judging is diagnose's, unchanged.

slurm: exit 0 and no output when healthy; exit 1 and one line
  ``Reason=fidoctor: <worst finding id> (+N more)``, at most 64 characters.
  A node fidoctor could not check (diagnose's exit 2) exits 0 here (a health
  check must not drain a node for fidoctor's own failure) and says why on
  stderr; the caller prints that.
npd: exit 0/1/2 exactly as diagnose (NPD reads 2 as unknown), one line ≤ 80
  characters (NPD's default ``max_output_length``).
prom: the textfile format; counts of findings per id and severity, how long
  unfinished builds have run and how long held build locks have been held.
"""

from __future__ import annotations

import os
import time
from typing import Dict, List, Optional, Tuple

from fidoctor.diagnosis import EXIT_FAILED, EXIT_HEALTHY, EXIT_PROBLEMS, Diagnosis

SLURM_REASON_MAX = 64
NPD_MAX = 80


def _failing(diag: Diagnosis) -> List:
    sev = ("error",) if diag.fail_on == "error" else ("error", "warning")
    return [f for f in diag.findings if f.severity in sev]


def _short(diag: Diagnosis, limit: int, prefix: str) -> str:
    bad = _failing(diag)
    ids = list(dict.fromkeys(f.id for f in bad))
    text = prefix + ids[0]
    if len(ids) > 1:
        text += f" (+{len(ids) - 1} more)"
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def slurm(diag: Diagnosis) -> Tuple[str, int, Optional[str]]:
    """(stdout, exit code, stderr note)."""
    code = diag.exit_code
    if code == EXIT_PROBLEMS:
        reason = _short(diag, SLURM_REASON_MAX - len("Reason="), "fidoctor: ")
        return "Reason=" + reason.replace("\n", " "), 1, None
    if code == EXIT_FAILED:
        from fidoctor.textsafe import shown  # one line, whatever path the reason quotes

        return "", 0, f"fidoctor: not checked ({shown(diag.unchecked or '')}); the node is left alone"
    return "", 0, None


def cannot_check(fmt: str, why: str) -> int:
    """slurm/npd output when fidoctor could not even gather (bad --python/--pid/--from on
    this node): the same contract as a diagnosis that could not check the JIT."""
    import click

    from fidoctor.textsafe import shown

    why = shown(why)
    if fmt == "slurm":
        click.echo(f"fidoctor: not checked ({why}); the node is left alone", err=True)
        return 0
    click.echo(f"fidoctor could not check: {why}"[:NPD_MAX])
    return 2


def npd(diag: Diagnosis) -> Tuple[str, int]:
    code = diag.exit_code
    if code == EXIT_PROBLEMS:
        return _short(diag, NPD_MAX, "FlashInfer JIT: "), 1
    if code == EXIT_FAILED:
        from fidoctor.textsafe import shown  # one line, whatever path the reason quotes

        return f"fidoctor could not check: {shown(diag.unchecked or '')}"[:NPD_MAX], 2
    return "FlashInfer JIT healthy", EXIT_HEALTHY


def _label(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _lock_ages(diag: Diagnosis) -> Dict[str, float]:
    mtimes: Dict[str, float] = {}
    for ws in diag.snapshot.data("cache").get("workspaces") or []:
        for lk in ws.get("locks") or [] if isinstance(ws, dict) else []:
            if isinstance(lk, dict) and isinstance(lk.get("mtime"), (int, float)):
                mtimes[str(lk.get("path"))] = float(lk["mtime"])
    for lk in diag.snapshot.data("locks").get("locks") or []:  # held ones: aged at any level
        if isinstance(lk, dict) and isinstance(lk.get("mtime"), (int, float)):
            mtimes[str(lk.get("path"))] = float(lk["mtime"])
    out: Dict[str, float] = {}
    for f in diag.findings:
        if f.id == "build-lock-held":
            path = str(f.data.get("lock_path") or f.subject)
            if path in mtimes:  # one series per name: the same lock in two workspaces
                name, age = os.path.basename(path), diag.snapshot.taken_at - mtimes[path]
                out[name] = max(0.0, age, out.get(name, 0.0))
    return out


def _longest(pairs: List[Tuple[str, float]]) -> Dict[str, float]:
    """One value per label: a module building in two workspaces (two FlashInfer versions or
    arch dirs) is one series, its longest age; two samples of one series make node-exporter
    drop the whole textfile."""
    out: Dict[str, float] = {}
    for k, v in pairs:
        out[k] = max(v, out.get(k, v))
    return out


def prom(diag: Diagnosis, level: str = "full") -> Tuple[str, int]:
    counts: Dict[Tuple[str, str], int] = {}
    for f in diag.findings:
        counts[(f.id, f.severity)] = counts.get((f.id, f.severity), 0) + 1
    out = ["# HELP fidoctor_finding Findings of fidoctor diagnose on this node, by id and "
           "severity.", "# TYPE fidoctor_finding gauge"]
    out += [f'fidoctor_finding{{id="{_label(i)}",severity="{s}"}} {n}'
            for (i, s), n in sorted(counts.items())]
    out += ["# HELP fidoctor_exit_code diagnose's exit code: 0 healthy, 1 problems, 2 not "
            "checked.", "# TYPE fidoctor_exit_code gauge",
            f'fidoctor_exit_code{{level="{level}"}} {diag.exit_code}']
    builds = [(str(f.data.get("module") or f.subject), float(f.data["age_s"]))
              for f in diag.findings if f.id == "jit-log-unfinished"
              and isinstance(f.data.get("age_s"), (int, float))]
    out += ["# HELP fidoctor_build_seconds How long an unfinished JIT build has been running "
            "(its start in the JIT log).", "# TYPE fidoctor_build_seconds gauge"]
    out += [f'fidoctor_build_seconds{{module="{_label(m)}"}} {s:.1f}'
            for m, s in sorted(_longest(builds).items())]
    out += ["# HELP fidoctor_lock_wait_seconds How long a build lock others wait on has been "
            "held (its file's mtime).", "# TYPE fidoctor_lock_wait_seconds gauge"]
    out += [f'fidoctor_lock_wait_seconds{{lock="{_label(k)}"}} {s:.1f}'
            for k, s in sorted(_lock_ages(diag).items())]
    out += ["# HELP fidoctor_last_run_timestamp_seconds When this check ran.",
            "# TYPE fidoctor_last_run_timestamp_seconds gauge",
            f"fidoctor_last_run_timestamp_seconds {time.time():.0f}"]
    return "\n".join(out) + "\n", diag.exit_code


def emit(diag: Diagnosis, fmt: str, level: str) -> int:
    """Print ``fmt`` for ``diag`` and return the exit code the format promises."""
    import click

    if fmt == "slurm":
        out, code, note = slurm(diag)
        if out:
            click.echo(out)
        if note:
            click.echo(note, err=True)
        return code
    if fmt == "npd":
        line, code = npd(diag)
        click.echo(line)
        return code
    text, code = prom(diag, level)
    import sys

    from fidoctor.errors import FidoctorError

    # Written by hand: on a full disk write(2) is short, and Python's buffered stdout (and
    # click.echo) dropped the rest silently, exit 0/1, a textfile cut mid-line. The format is
    # UTF-8 whatever the locale says.
    view = memoryview(text.encode("utf-8", "replace"))
    try:
        sys.stdout.flush()
        while view:
            view = view[os.write(sys.stdout.fileno(), view):]
    except BrokenPipeError:
        raise
    except OSError as e:
        try:  # the rest of the buffer goes nowhere: the exit flush must not fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        raise FidoctorError(f"the textfile could not be written whole: {e.strerror or e}",
                            hint="free space where stdout goes; the file is incomplete") from e
    return code
