"""``fidoctor diagnose``: gather, run every probe, print findings; exit 0/1/2."""

from __future__ import annotations

import json

import click

from fidoctor.commands._common import obtain_snapshot, target_options


@click.command("diagnose")
@target_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object (schema_version 1).")
def command(python, pid, deep, from_file, as_json) -> int:
    """Find out why FlashInfer's JIT hangs or fails here, with evidence and fixes."""
    from fidoctor.diagnosis import diagnose

    diag = diagnose(obtain_snapshot(python, pid, deep, from_file))
    if as_json:
        click.echo(json.dumps(diag.to_json(), indent=2, sort_keys=False))
    else:
        from fidoctor.render.style import Styler, use_colour
        from fidoctor.render.text import render

        click.echo(render(diag, Styler(use_colour())))
    return diag.exit_code
