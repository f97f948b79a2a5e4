"""Guarded subprocesses: every child has a deadline and dies with its whole group.

Modelled on tox/pre-commit: argv lists only (never ``shell=True``), a missing
or non-executable program is a *result*, not an exception, and a timeout kills
the child's entire process group, because the things we run (interpreters,
nvcc) spawn children of their own.

Output is capped too (``OUTPUT_CAP`` per stream, default 4 MiB): a target
interpreter that floods stdout is killed with its group once the cap is
passed, and the run says so (``error``), instead of buffering gigabytes.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

OUTPUT_CAP = 4 << 20


@dataclass
class RunResult:
    argv: Sequence[str]
    returncode: Optional[int]
    stdout: str
    stderr: str
    timed_out: bool = False
    error: str = ""  # set when the program could not be started at all, or flooded its output

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
    data = input_text.encode() if input_text is not None else None
    out, err, timed_out, flooded = _communicate(p, data, timeout, OUTPUT_CAP)
    return RunResult(
        argv,
        p.returncode,
        out.decode("utf-8", "replace"),
        err.decode("utf-8", "replace"),
        timed_out=timed_out,
        error=(f"{argv[0]} printed more than {OUTPUT_CAP >> 20} MiB; stopped it"
               if flooded else ""),
    )


def _communicate(p: subprocess.Popen, data: Optional[bytes], timeout: float,
                 cap: int) -> Tuple[bytes, bytes, bool, bool]:
    """Feed ``data``, read both pipes up to ``cap`` bytes each, until exit or ``timeout``.

    Past the deadline or the cap, the child's whole group is killed; a
    grandchild that left the group and keeps the pipes open is not waited for.
    """
    deadline = time.monotonic() + timeout
    bufs: Dict[int, List[bytes]] = {}
    sizes: Dict[int, int] = {}
    sel = selectors.DefaultSelector()
    fds = [f.fileno() if f is not None else -1 for f in (p.stdout, p.stderr)]
    for f in (p.stdout, p.stderr):
        if f is not None:
            sel.register(f, selectors.EVENT_READ)
            bufs[f.fileno()], sizes[f.fileno()] = [], 0
    if p.stdin is not None:
        try:
            if data:
                p.stdin.write(data)
            p.stdin.close()
        except (BrokenPipeError, OSError):
            pass
    timed_out = flooded = False
    try:
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            for key, _ in sel.select(min(left, 0.5)):
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                if sizes[key.fd] < cap:
                    bufs[key.fd].append(chunk[: cap - sizes[key.fd]])
                sizes[key.fd] += len(chunk)
                if sizes[key.fd] > cap:
                    flooded = True
            if flooded:
                break
        if timed_out or flooded:
            kill_group(p.pid)
        try:
            p.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            kill_group(p.pid)
            timed_out = True
            p.wait(timeout=2)
    except BaseException:  # Ctrl-C while waiting: the child's group goes with us
        kill_group(p.pid)
        raise
    finally:
        sel.close()
        for f in (p.stdout, p.stderr):
            if f is not None:
                f.close()
    return (b"".join(bufs.get(fds[0], [])), b"".join(bufs.get(fds[1], [])), timed_out, flooded)
