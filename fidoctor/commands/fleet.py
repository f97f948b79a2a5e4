"""``fidoctor fleet``: many nodes' reports grouped by verdict, plus what only a fleet shows."""

from __future__ import annotations

import json

import click


@click.command("fleet")
@click.argument("reports", nargs=-1, metavar="REPORTS…")
@click.option("--json", "as_json", is_flag=True, help="One JSON object (schema fleet, version 1).")
@click.option("--markdown", "as_md", is_flag=True, help="Markdown, to paste into an issue.")
@click.option("--timeout", type=click.FloatRange(0.1, 86400), default=60.0, show_default=True,
              metavar="SECONDS", help="Stop reading stdin ('-') after this long; what was "
              "read is judged.")
def command(reports, as_json, as_md, timeout) -> int:
    """Group many nodes' reports by verdict; find shared caches, drift and stragglers.

    \b
    REPORTS are diagnose --json outputs or snapshots (replayed here): files,
    directories of *.json / *.jsonl, or - for JSON lines on stdin. A line
    {"node": NAME, "unreachable": REASON} lists a node that did not answer.
    Exit codes: 0 every node healthy · 1 a problem somewhere (or a node that
    did not answer) · 2 no node answered.
    """
    from fidoctor.fleet.load import load
    from fidoctor.fleet.report import build, markdown, text

    if as_json and as_md:
        raise click.UsageError("--json and --markdown contradict each other; pick one")
    rep = build(load(list(reports), stdin_timeout=timeout))
    if as_json:
        click.echo(json.dumps(rep.to_json(), indent=1))
    elif as_md:
        click.echo(markdown(rep), nl=False)
    else:
        click.echo(text(rep))
    return rep.exit_code
