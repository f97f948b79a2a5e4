"""``fidoctor snapshot``: write the gathered facts to a file for replay elsewhere.

Redacted by default, like ``report`` (the same pass: user and host names,
addresses and secrets become stable placeholders; other users' build trees
are left out), because a snapshot is made to be sent to someone. The file is
written mode 0600 and never over anything but a regular file.
Exit codes: 0 written · 2 it could not be written (bad target, bad ``-o``).
"""

from __future__ import annotations

import sys

import click

from fidoctor.commands._common import live_target_options, make_context, output_options


@click.command("snapshot")
@live_target_options
@output_options("the snapshot JSON")
def command(python, pid, deep, output, no_redact) -> int:
    """Gather facts only; replay them with: fidoctor diagnose --from FILE."""
    from fidoctor.report import redacted_snapshot
    from fidoctor.safeio import check_writable_target
    from fidoctor.snapshot import dumps
    from fidoctor.snapshot.runner import gather_snapshot

    if output != "-":
        check_writable_target(output, "snapshot")  # refuse before gathering, not after
    snap = gather_snapshot(make_context(python, pid, deep))
    hidden = "NOT redacted: read it before you send it"
    if not no_redact:
        snap, summary = redacted_snapshot(snap)
        hidden = "redacted " + (", ".join(f"{n} {k}" for k, n in summary.items())
                                or "(nothing private found)")
    if output == "-":
        sys.stdout.write(dumps(snap.to_dict()))
        click.echo(hidden, err=True)
    else:
        snap.save(output)
        bad = [n for n, s in snap.sections.items() if not s.ok]
        click.echo(f"wrote {output} ({len(snap.sections)} sections"
                   + (f"; not gathered: {', '.join(bad)}" if bad else "") + f"; {hidden})",
                   err=True)
    return 0
