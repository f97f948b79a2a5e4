"""Options shared by ``fidoctor run`` and ``fidoctor watch`` (the live watch)."""

from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence

import click

from fidoctor.commands._common import Seconds


def live_options(f: Callable) -> Callable:
    @click.option("--stall-after", type=Seconds(min=1), default=30.0, show_default=True,
                  metavar="SECONDS",
                  help="A build with no CPU in its compiler tree and no new files this long is "
                  "stalled (a slow build is never stalled).")
    @click.option("--lock-idle-after", type=Seconds(min=1), default=8.0,
                  show_default=True, metavar="SECONDS",
                  help="A JIT lock whose holder does nothing this long is a stall.")
    @click.option("--on-stall", type=click.Choice(["none", "report", "exit"]), default="none",
                  show_default=True,
                  help="After printing the diagnosis: also write the redacted report (report), "
                  "or end the server's whole tree and exit 124 (exit).")
    @click.option("--report", "report_path", metavar="FILE",
                  help="Where --on-stall report writes (default fidoctor-stall-PID-TIME.md).")
    @click.option("--deadline", "deadline", multiple=True, metavar="SECONDS[=LABEL]",
                  help="A clock of yours that kills slow starts (e.g. 600=startupProbe); "
                  "repeatable. vLLM's and SGLang's are read from the command and environment.")
    @click.option("--events", "events", metavar="FILE",
                  help="Append every event as a JSON line to FILE.")
    @click.option("--quiet", is_flag=True,
                  help="No fidoctor: lines on stderr (use with --events).")
    @click.option("--progress-every", type=Seconds(min=1), default=15.0,
                  show_default=True, metavar="SECONDS", help="How often a build's progress "
                  "line repeats.")
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        return f(*args, **kwargs)

    return wrapper


def make_options(stall_after: float, lock_idle_after: float, on_stall: str,
                 report_path: Optional[str], deadline: Sequence[str], progress_every: float):
    from fidoctor.live.deadlines import parse_user_deadline
    from fidoctor.live.session import Options

    return Options(stall_after=stall_after, lock_idle_after=lock_idle_after, on_stall=on_stall,
                   report_path=report_path,
                   user_deadlines=[parse_user_deadline(d) for d in deadline],
                   progress_every=progress_every)


def make_emitter(events: Optional[str], quiet: bool):
    from fidoctor.errors import FidoctorError
    from fidoctor.live.events import Emitter

    try:
        return Emitter(events, quiet=quiet)
    except OSError as e:
        raise FidoctorError(f"--events {events}: cannot open: {e.strerror or e}",
                            "pass a writable file path") from None
