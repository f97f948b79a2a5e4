"""fidoctor's own lock: one ``fix`` or ``undo`` at a time per user.

A real ``flock`` on ``<state_dir>/fix.lock``: the kernel drops it when the
holder dies (even by SIGKILL), so a killed fix never blocks the next run; the
journal, not the lock, says whether the killed fix left work to recover.
"""

from __future__ import annotations

import fcntl
import os
import stat
import time
from typing import Dict, Optional

from fidoctor.errors import FidoctorError


def check_own_dir(d: str) -> None:
    """Refuse a state dir (or one below it) that someone else could have written.

    Journals say what undo moves, writes and removes, and fix.lock is truncated
    and written: a state dir owned by another user, writable by group or others,
    or a symlink someone else planted would let them steer fidoctor (often root)
    to files that are not ours. Like ssh with ~/.ssh, fidoctor then does nothing.
    """
    for sub in (d, os.path.join(d, "transactions")):
        try:
            lst, st = os.lstat(sub), os.stat(sub)
        except FileNotFoundError:
            continue
        why = ""
        if lst.st_uid != os.geteuid() or st.st_uid != os.geteuid():
            why = f"owned by uid {lst.st_uid if lst.st_uid != os.geteuid() else st.st_uid}"
        elif not stat.S_ISDIR(st.st_mode):
            why = "not a directory"
        elif st.st_mode & 0o002 or (st.st_mode & 0o020 and st.st_gid != os.getegid()):
            # group-writable is fine for the user's own (user-private) group, as umask 002 makes
            why = f"writable by {'others' if st.st_mode & 0o002 else 'group ' + str(st.st_gid)} " \
                  f"(mode {stat.S_IMODE(st.st_mode):o})"
        if why:
            raise FidoctorError(
                f"fidoctor's state dir {sub} is {why}: its journals and lock could have been "
                f"written by someone else, so fidoctor will not fix or undo anything from it "
                f"(this user is uid {os.geteuid()})",
                "set XDG_STATE_HOME to a directory of your own (mode 0700), or chmod go-w / "
                "chown it if it really is yours")


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
            check_own_dir(os.path.dirname(self.path))
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
                         | os.O_NONBLOCK, 0o600)
        except OSError as e:
            state = os.path.dirname(self.path)
            kept = os.path.isdir(os.path.join(state, "transactions"))
            raise FidoctorError(
                f"cannot open fidoctor's lock {self.path}: {e.strerror}",
                # another XDG_STATE_HOME would hide the journals undo needs
                f"make {state} writable again (remount it read-write, free space): the "
                "journals of earlier fixes are there, and undo needs them" if kept else
                "set XDG_STATE_HOME to a writable directory of your own") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode) or os.fstat(fd).st_uid != os.geteuid():
            os.close(fd)
            raise FidoctorError(f"{self.path} is not a regular file of this user; fidoctor "
                                "will not lock (or write) it",
                                "remove it, or set XDG_STATE_HOME to a directory of your own")
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
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}, {self.what}, since "
                          f"{time.strftime('%H:%M:%S')}\n".encode(), 0)
        except OSError:
            pass  # a full disk: the flock is held all the same, only the holder's note is lost
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
