"""``fidoctor run [options] -- CMD …``: start a server and watch its start as it happens.

The server's stdin, stdout and stderr pass through (a terminal stays the server's
terminal), INT/TERM/HUP/QUIT are forwarded, and the exit code is the server's (128+N when
a signal N ended it). If fidoctor dies, the server keeps running: it has a session (or,
on a terminal, a process group) of its own and its output goes through a forwarder that
outlives us (fidoctor/live/tap.py).
"""

from __future__ import annotations

import click

from fidoctor.commands._live import live_options, make_emitter, make_options


@click.command("run", context_settings={"allow_interspersed_args": False})
@live_options
@click.option("--tap", "tap", type=click.Choice(["auto", "always", "never"]), default="auto",
              show_default=True,
              help="Read the server's stdout/stderr for fatal lines: auto = those that are "
              "not a terminal.")
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED, metavar="-- CMD...")
def command(stall_after, lock_idle_after, on_stall, report_path, deadline, events, quiet,
            progress_every, tap, cmd) -> int:
    """Run a server and say what its FlashInfer JIT builds are doing while it starts.

    \b
    Each build as it begins (module, FA2/FA3, arch), its progress and ETA, lock waits and
    their holders, the deadlines that will kill a slow start; a stall is diagnosed at once
    (the same findings as `fidoctor diagnose --pid`).
    Exit codes: the server's · 124 --on-stall exit ended it · 2 fidoctor could not start it.
    """
    from fidoctor.live.session import run_command

    opts = make_options(stall_after, lock_idle_after, on_stall, report_path, deadline,
                        progress_every)
    emitter = make_emitter(events, quiet)
    try:
        return run_command(list(cmd), opts, emitter, tap_mode=tap)
    finally:
        emitter.close()
