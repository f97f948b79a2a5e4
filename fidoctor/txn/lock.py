"""fidoctor's own lock: one ``fix`` or ``undo`` at a time per user.

A real ``flock`` on ``<state_dir>/fix.lock``: the kernel drops it when the
holder dies (even by SIGKILL), so a killed fix never blocks the next run; the
journal, not the lock, says whether the killed fix left work to recover.
"""

from __future__ import annotations

import fcntl
import os
import time
from typing import Dict, Optional

from fidoctor.errors import FidoctorError


class FixLock:
    """Exclusive, re-entrant within one process (``fix`` holds it while its proof
    step runs warmup, whose quarantine takes it again); ``wait_s`` > 0 retries."""

    _held: Dict[str, int] = {}  # lock path -> nesting depth in this process

    def __init__(self, state: str, what: str, wait_s: float = 0.0) -> None:
        self.path = os.path.join(state, "fix.lock")
        self.what = what
        self.wait_s = wait_s
        self.fd: Optional[int] = None
        self.nested = False

    def __enter__(self) -> FixLock:
        if self._held.get(self.path):
            self._held[self.path] += 1
            self.nested = True
            return self
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                return self._acquire()
            except FidoctorError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    def _acquire(self) -> FixLock:
        try:
            os.makedirs(os.path.dirname(self.path), 0o700, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise FidoctorError(f"cannot open fidoctor's lock {self.path}: {e.strerror}",
                                "set XDG_STATE_HOME to a writable directory") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
            os.close(fd)
            raise FidoctorError(
                f"another fidoctor fix or undo is running ({holder}); "
                f"not starting a second one",
                "wait for it to finish and run this again",
            ) from None
        except OSError as e:
            os.close(fd)
            raise FidoctorError(f"cannot lock {self.path}: {e.strerror}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, {self.what}, since "
                      f"{time.strftime('%H:%M:%S')}\n".encode(), 0)
        self.fd = fd
        self._held[self.path] = 1
        return self

    def __exit__(self, *exc: object) -> None:
        if self.nested:
            self._held[self.path] -= 1
            return
        self._held.pop(self.path, None)
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None
