"""``fidoctor undo``: revert the last fix byte-for-byte, or recover an interrupted one.

A committed fix is undone step by step, newest first (files restored from
their backups, quarantined dirs renamed back, sha256 checked). A fix that was
killed mid-way is rolled back from its journal and the disk's actual state.
Exit codes: 0 reverted; 1 reverted with parts left as they were (listed);
2 nothing to undo or fidoctor could not do it.
"""

from __future__ import annotations

import signal

import click


@click.command("undo")
@click.option("--id", "txid", metavar="ID", help="The fix to revert (see fidoctor history); "
              "default: the last applied or interrupted one.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object (fidoctor/schema/undo.schema.json) instead of text.")
def command(txid, as_json) -> int:
    """Revert the last fix (or --id), or recover one that was interrupted."""
    from fidoctor.paths import state_dir
    from fidoctor.txn import FixLock, history, undo

    state = state_dir()
    with FixLock(state, "fidoctor undo"):
        before = {j.txid: j.status for j in history(state)}
        # Half an undo is worse than a slow one: Ctrl-C waits until the renames are done.
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            out = undo(state, txid)
        finally:
            signal.signal(signal.SIGINT, old)
    from fidoctor.textsafe import shown

    out.done, out.warnings, out.left = ([shown(x) for x in xs]
                                        for xs in (out.done, out.warnings, out.left))
    was = before.get(out.txid)
    if as_json:
        import json

        from fidoctor import __version__

        click.echo(json.dumps({
            "schema_version": 1, "fidoctor_version": __version__, "txid": out.txid,
            "was": was, "status": "partial" if out.left else "reverted",
            "done": out.done, "warnings": out.warnings, "left": out.left,
            "journal_error": out.journal_error or None, "exit_code": 1 if out.left else 0},
            indent=2))
        return 1 if out.left else 0
    verb = "rolled back interrupted fix" if was == "interrupted" else "undid fix"
    click.echo(f"{verb} {shown(out.txid)}: {len(out.done)} change(s) reverted")
    for d in out.done:
        click.echo(f"  {d}")
    for w in out.warnings:
        click.echo(f"  warning: {w}")
    for left in out.left:
        click.echo(f"  left as is: {left}")
    if out.left:
        click.echo("some changes were not reverted (see above); nothing was overwritten")
        return 1
    return 0
