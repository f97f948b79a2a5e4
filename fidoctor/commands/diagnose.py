"""``fidoctor diagnose``: gather, run every probe, print findings; exit 0/1/2 (see diagnosis.py)."""

from __future__ import annotations

import json

import click

from fidoctor.commands._common import log_options, target_options, with_logs
from fidoctor.errors import FidoctorError


@click.command("diagnose")
@target_options
@log_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object (schema_version 1).")
@click.option("--level", type=click.Choice(["full", "quick"]), default="full", show_default=True,
              help="quick: static facts only (no target subprocess, ninja or CPU sampling), "
              "within 5 s even on a stalled mount: for node health checks.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "slurm", "prom", "npd"]),
              default="text", show_default=True,
              help="slurm: exit 0, or 1 with one Reason= line (≤ 64 chars); prom: a "
              "node-exporter textfile; npd: node-problem-detector (0 OK, 1 problem, 2 unknown).")
@click.option("--fail-on", type=click.Choice(["error", "warning"]), default="warning",
              show_default=True, help="Lowest severity that makes the exit code 1.")
@click.option("-q", "--quiet", is_flag=True, help="Print the verdict line only.")
@click.option("-v", "--verbose", is_flag=True,
              help="Also print how the target was chosen and each fact's gather time.")
@click.option("--list-checks", is_flag=True,
              help="List every check (probe): its id, what it reads and its time budget; "
              "gather nothing.")
def command(python, pid, deep, from_file, logs, log_only, log_timeout, as_json, level, fmt,
            fail_on, quiet, verbose, list_checks) -> int:
    """Find out why FlashInfer's JIT hangs or fails here, with evidence and fixes.

    \b
    --log FILE adds what the server printed (same finding ids, evidence with
    file and line); --log-only reads a pasted log without looking at this machine.
    """
    if list_checks:
        from fidoctor.checklist import checks, text_lines

        rows = checks()
        click.echo(json.dumps({"checks": rows}, indent=2) if as_json else "\n".join(text_lines(rows)))
        return 0
    from fidoctor.diagnosis import diagnose

    if quiet and verbose:
        raise click.UsageError("-q and -v contradict each other; pick one")
    if as_json and fmt not in ("text", "json"):
        raise click.UsageError(f"--json and --format {fmt} contradict each other; pick one")
    try:
        snap = with_logs(python, pid, deep, from_file, logs, log_only, log_timeout, level)
    except FidoctorError as e:
        if fmt not in ("slurm", "npd"):
            raise
        # A health check that cannot look (this node lacks the --python venv, the --pid is
        # gone) is "could not check": slurm leaves the node alone (exit 0: a Prolog's non-zero
        # exit drains it), npd says unknown (2); both say why, as for an unchecked JIT.
        from fidoctor.render.health import cannot_check

        return cannot_check(fmt, e.message)
    diag = diagnose(snap, fail_on=fail_on)
    if level == "quick":
        from fidoctor.quick import add_stalled

        add_stalled(diag)
    if fmt in ("slurm", "prom", "npd"):
        from fidoctor.render.health import emit

        return emit(diag, fmt, level)
    if as_json or fmt == "json":
        click.echo(json.dumps(diag.to_json(), indent=2, sort_keys=False))
        return diag.exit_code
    from fidoctor.render.style import Styler, use_colour
    from fidoctor.render.text import render, summary_line, verbose_lines

    if quiet:
        click.echo(summary_line(diag))
        return diag.exit_code
    text = render(diag, Styler(use_colour()))
    if verbose:
        text += "\n" + "\n".join(verbose_lines(diag))
    click.echo(text)
    return diag.exit_code
