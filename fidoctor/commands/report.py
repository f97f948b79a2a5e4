"""``fidoctor report``: a Markdown report to paste into a GitHub issue, redacted by default.

Exit codes: 0 when the report was written (whatever it found: the findings are
its content, ``fidoctor diagnose`` is the command whose exit code judges the
box); 2 when it was not (bad ``--from`` snapshot, unwritable ``-o``, bad
``--python``/``--pid``).
"""

from __future__ import annotations

import os
import sys

import click

from fidoctor.commands._common import log_options, make_context, output_options, target_options, with_logs

DEFAULT_SNAPSHOT = "fidoctor-report.snapshot.json"


def snapshot_path(output: str) -> str:
    """``report.md`` → ``report.snapshot.json`` next to it; stdout → the current directory."""
    if output == "-":
        return DEFAULT_SNAPSHOT
    base = output[:-3] if output.endswith(".md") else output
    return base + ".snapshot.json"


def _write(path: str, text: str) -> None:
    """Write through safeio (temp file + rename, mode 0600, never over a non-regular file)."""
    from fidoctor.safeio import write_atomic

    write_atomic(path, text.encode("utf-8"), 0o600, what="report")


@click.command("report")
@target_options
@output_options("the Markdown report")
@click.option("--attach-snapshot", is_flag=True,
              help="Also write the (redacted) snapshot next to the report as "
              "<report>.snapshot.json, for: fidoctor diagnose --from FILE.")
@log_options
@click.option("--no-collect-env", is_flag=True,
              help="Do not run FlashInfer's own 'flashinfer collect-env --json' in the target "
              "(it imports torch and FlashInfer; up to 60 s).")
def command(python, pid, deep, from_file, output, no_redact, attach_snapshot, logs, log_only,
            log_timeout, no_collect_env) -> int:
    """Write a Markdown report for a bug report: verdict, findings and fixes, versions.

    \b
    Redacted by default: the same private value always becomes the same
    placeholder (<user-1>, <host-1>, <ip-1>, <mac-1>, <secret-1>, <home-1>).
    --log FILE puts the server log's lines that matter (with line numbers) in
    the report; FlashInfer's own 'collect-env --json' is included verbatim.
    Exit codes: 0 report written · 2 it could not be written.
    """
    from fidoctor.report import build
    from fidoctor.safeio import check_writable_target
    from fidoctor.snapshot import dumps
    from fidoctor.textsafe import bytes_shown

    snap_file = snapshot_path(output) if attach_snapshot else None
    for path in ([output] if output != "-" else []) + ([snap_file] if snap_file else []):
        check_writable_target(path)  # refuse before gathering, not after
    snap = with_logs(python, pid, deep, from_file, logs, log_only, log_timeout)
    if not (from_file or log_only or no_collect_env):
        _collect_env(snap, python, pid, deep)
    import shlex

    report = build(snap, redact=not no_redact,
                   snapshot_name=os.path.basename(snap_file) if snap_file else None,
                   command=shlex.join(["fidoctor", *sys.argv[1:]]))
    report.markdown = bytes_shown(report.markdown)  # a module dir named in bytes not UTF-8
    if snap_file:
        _write(snap_file, dumps(report.snapshot.to_dict()))
    if output == "-":
        sys.stdout.write(report.markdown)
        sys.stdout.flush()
    else:
        _write(output, report.markdown)
    c = report.diagnosis.counts()
    what = f"{c['error']} error(s), {c['warning']} warning(s), {c['info']} info"
    hidden = ("NOT redacted: read it before you post it" if report.redaction is None else
              "redacted " + (", ".join(f"{n} {k}" for k, n in report.redaction.items())
                             or "(nothing private found)"))
    where = "" if output == "-" else f"wrote {output}: "
    click.echo(f"{where}{what}; {hidden}"
               + (f"; snapshot: {snap_file}" if snap_file else ""), err=True)
    if report.replay_mismatch:
        click.echo("warning: the redacted snapshot does not replay to the same findings "
                   f"({report.replay_mismatch[:3]}); this is a fidoctor bug", err=True)
    return 0


def _collect_env(snap, python, pid, deep) -> None:
    """FlashInfer's own report, run guarded in the target when it has FlashInfer."""
    from fidoctor.diagnosis import target_summary
    from fidoctor.flashinfer.collect_env import collect
    from fidoctor.snapshot import Section

    t = target_summary(snap)
    if not (t["usable"] and t["flashinfer"] and t["python"]):
        return
    ctx = make_context(python, pid, deep)
    data = collect(str(t["python"]), ctx.env)
    snap.sections["collect_env"] = Section("ok", data, elapsed_s=data["elapsed_s"])

