"""``fidoctor watch --pid N|auto [--once]``: the live watch, attached to a running server."""

from __future__ import annotations

import os

import click

from fidoctor.commands._common import PID, PID_HELP, resolve_pid
from fidoctor.commands._live import live_options, make_emitter, make_options
from fidoctor.errors import FidoctorError


@click.command("watch")
@click.option("--pid", "pid_arg", type=PID, required=True, metavar="PID|auto", help=PID_HELP)
@click.option("--once", is_flag=True,
              help="One status line and an exit code: 0 not compiling or progressing · "
              "1 stalled or failed · 2 could not tell (a Kubernetes probe).")
@click.option("--state", "state_path", metavar="FILE",
              help="--once: what to remember between runs (default in fidoctor's cache).")
@live_options
def command(pid_arg, once, state_path, stall_after, lock_idle_after, on_stall, report_path,
            deadline, events, quiet, progress_every) -> int:
    """Watch a running server's FlashInfer JIT builds until it exits.

    \b
    Exit codes: 0 nothing stalled or failed · 1 a stall or failed build was seen ·
    2 could not watch. With --once: 0 not compiling or progressing · 1 stalled or
    failed · 2 could not tell.
    """
    from fidoctor.live.session import probe_once, watch_pid

    pid, _choice = resolve_pid(pid_arg)
    assert pid is not None
    opts = make_options(stall_after, lock_idle_after, on_stall, report_path, deadline,
                        progress_every)
    emitter = make_emitter(events, quiet)
    restore = _terminate_is_interrupt()
    try:
        if once:
            if state_path is None:
                from fidoctor.paths import cache_dir

                state_path = os.path.join(cache_dir(), "watch", f"{pid}.json")
            return probe_once(pid, opts, emitter, state_path)
        if not os.path.exists(f"/proc/{pid}"):
            raise FidoctorError(f"no process with pid {pid}", "check the pid with: ps aux")
        return watch_pid(pid, opts, emitter)
    finally:
        restore()
        emitter.close()


def _terminate_is_interrupt():
    """SIGTERM (kubectl, timeout(1), a sidecar's stop) and SIGHUP (the terminal closed) take
    Ctrl-C's way out: the watch's own helpers end and its unredacted snapshot file is removed,
    exit 130. They killed the watch outright: its snapshot child ran on and the file (the
    server's environment, secrets and all) stayed in /tmp."""
    import signal

    def handler(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}

    def restore() -> None:
        for s, h in old.items():
            signal.signal(s, h)

    return restore
