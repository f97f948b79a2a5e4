"""fidoctor's own lock: one ``fix`` or ``undo`` at a time per user.

A real ``flock`` on ``<state_dir>/fix.lock``: the kernel drops it when the
holder dies (even by SIGKILL), so a killed fix never blocks the next run; the
journal, not the lock, says whether the killed fix left work to recover.
"""

from __future__ import annotations

import fcntl
import os
import time
from typing import Optional

from fidoctor.errors import FidoctorError


class FixLock:
    def __init__(self, state: str, what: str) -> None:
        self.path = os.path.join(state, "fix.lock")
        self.what = what
        self.fd: Optional[int] = None

    def __enter__(self) -> FixLock:
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
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None
