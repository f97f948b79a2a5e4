"""Guarded subprocesses: every child has a deadline and dies with its whole group.

Modelled on tox/pre-commit: argv lists only (never ``shell=True``), a missing
or non-executable program is a *result*, not an exception, and a timeout kills
the child's entire process group, because the things we run (interpreters,
nvcc) spawn children of their own.
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence


@dataclass
class RunResult:
    argv: Sequence[str]
    returncode: Optional[int]
    stdout: str
    stderr: str
    timed_out: bool = False
    error: str = ""  # set when the program could not be started at all

    @property
    def ok(self) -> bool:
        return not self.error and not self.timed_out and self.returncode == 0

    def describe(self) -> str:
        """One line saying how the run ended, for evidence and error messages."""
        if self.error:
            return self.error
        if self.timed_out:
            return f"timed out: {' '.join(self.argv)}"
        if self.returncode != 0:
            tail = (self.stderr or self.stdout).strip().splitlines()[-1:] or [""]
            return f"exit {self.returncode}: {tail[0][:300]}"
        return "ok"


def kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    """Signal the process group led by ``pid``; quietly ignore a group already gone."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run(
    argv: Sequence[str],
    timeout: float,
    env: Optional[Mapping[str, str]] = None,
    cwd: Optional[str] = None,
    input_text: Optional[str] = None,
) -> RunResult:
    """Run ``argv`` to completion or ``timeout`` seconds, whichever comes first.

    The child leads a new session so a timeout can kill it and everything it
    started. Output is decoded leniently: binary garbage must not raise.
    """
    try:
        p = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    except FileNotFoundError:
        return RunResult(argv, None, "", "", error=f"not found: {argv[0]}")
    except PermissionError:
        return RunResult(argv, None, "", "", error=f"not executable: {argv[0]}")
    except OSError as e:
        return RunResult(argv, None, "", "", error=f"cannot run {argv[0]}: {e.strerror or e}")
    timed_out = False
    data = input_text.encode() if input_text is not None else None
    try:
        out, err = p.communicate(data, timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        kill_group(p.pid)
        try:
            out, err = p.communicate(timeout=2)
        except subprocess.TimeoutExpired:
            # A grandchild that left our group still holds the pipes; stop reading.
            out, err = b"", b""
            for f in (p.stdout, p.stderr):
                if f:
                    f.close()
            p.wait(timeout=2)
    return RunResult(
        argv,
        p.returncode,
        out.decode("utf-8", "replace"),
        err.decode("utf-8", "replace"),
        timed_out=timed_out,
    )
