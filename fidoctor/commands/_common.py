"""Options shared by every command that looks at a target environment."""

from __future__ import annotations

import functools
import os
from typing import Callable, Optional

import click

from fidoctor.errors import FidoctorError
from fidoctor.snapshot import Snapshot
from fidoctor.snapshot.context import GatherContext, build_context


def target_options(f: Callable) -> Callable:
    """``--python``, ``--pid``, ``--deep``, ``--from`` for commands that gather."""

    @click.option("--python", "python", metavar="PATH",
                  help="Interpreter of the serving environment (default: active venv/conda, "
                  "else fidoctor's own).")
    @click.option("--pid", type=int, metavar="PID",
                  help="A running (or hung) server: its environment and interpreter drive "
                  "every check.")
    @click.option("--deep", is_flag=True,
                  help="Also import torch in the target (in a guarded subprocess) to confirm.")
    @click.option("--from", "from_file", metavar="SNAPSHOT", type=click.Path(dir_okay=False),
                  help="Replay a snapshot written by 'fidoctor snapshot' instead of gathering.")
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        return f(*args, **kwargs)

    return wrapper


def make_context(python: Optional[str], pid: Optional[int], deep: bool) -> GatherContext:
    if python and not os.path.exists(python):
        raise FidoctorError(f"--python {python}: no such file",
                            "pass the interpreter of the serving venv, e.g. /opt/venv/bin/python")
    if pid is not None and pid <= 0:
        raise FidoctorError(f"--pid {pid}: not a process id")
    return build_context(python=python, pid=pid, deep=deep)


def obtain_snapshot(python: Optional[str], pid: Optional[int], deep: bool,
                    from_file: Optional[str]) -> Snapshot:
    """Load ``--from`` or gather a fresh snapshot; exactly one source."""
    if from_file:
        if python or pid:
            raise FidoctorError("--from replays a snapshot; it cannot be combined with "
                                "--python or --pid")
        return Snapshot.load(from_file)
    from fidoctor.snapshot.runner import gather_snapshot

    return gather_snapshot(make_context(python, pid, deep))
