"""``fidoctor diagnose``: gather, run every probe, print findings; exit 0/1/2."""

from __future__ import annotations

import json

import click

from fidoctor.commands._common import log_options, target_options, with_logs


@click.command("diagnose")
@target_options
@log_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object (schema_version 1).")
def command(python, pid, deep, from_file, logs, log_only, as_json) -> int:
    """Find out why FlashInfer's JIT hangs or fails here, with evidence and fixes.

    \b
    --log FILE adds what the server printed (same finding ids, evidence with
    file and line); --log-only reads a pasted log without looking at this machine.
    """
    from fidoctor.diagnosis import diagnose

    diag = diagnose(with_logs(python, pid, deep, from_file, logs, log_only))
    if as_json:
        click.echo(json.dumps(diag.to_json(), indent=2, sort_keys=False))
    else:
        from fidoctor.render.style import Styler, use_colour
        from fidoctor.render.text import render

        click.echo(render(diag, Styler(use_colour())))
    return diag.exit_code
