"""``fidoctor snapshot``: write the gathered facts to a file for replay elsewhere."""

from __future__ import annotations

import sys

import click

from fidoctor.commands._common import make_context


@click.command("snapshot")
@click.option("--python", "python", metavar="PATH", help="Interpreter of the serving environment.")
@click.option("--pid", type=int, metavar="PID", help="A running (or hung) server process.")
@click.option("--deep", is_flag=True, help="Also import torch in the target to confirm.")
@click.option("-o", "--output", metavar="FILE", default="-", show_default=True,
              help="Where to write the snapshot JSON ('-' for stdout).")
def command(python, pid, deep, output) -> int:
    """Gather facts only; replay them with: fidoctor diagnose --from FILE."""
    import json

    from fidoctor.snapshot.runner import gather_snapshot

    snap = gather_snapshot(make_context(python, pid, deep))
    if output == "-":
        json.dump(snap.to_dict(), sys.stdout, indent=1, sort_keys=True)
        sys.stdout.write("\n")
    else:
        snap.save(output)
        bad = [n for n, s in snap.sections.items() if not s.ok]
        click.echo(f"wrote {output} ({len(snap.sections)} sections"
                   + (f"; not gathered: {', '.join(bad)}" if bad else "") + ")", err=True)
    return 0
