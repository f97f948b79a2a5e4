"""What the live watch says: ``fidoctor:`` lines on stderr, JSON lines in ``--events FILE``.

Every event is one JSON object per line (``fidoctor/schema/events.schema.json``):
``{"event": KIND, "t": epoch seconds, "text": the line a person reads, …data}``. Kinds:
``start``, ``build-start``, ``progress``, ``deadline``, ``build-end``, ``lock-wait``,
``lock-end``, ``orphans`` (a freed module's orphaned compilers, ``pids``: diagnose's
build-process-stuck judgement), ``memory-thrash`` (a build thrashing at its memory cgroup's
limit, ``fidoctor.live.thrash``: diagnose's build-memory-thrash finding, ``finding_id``,
``usage``, ``limit``, ``limit_hits_per_s``, ``majflt_per_s``), ``stall``, ``resumed``,
``diagnosis`` (``findings``: diagnose's finding dicts), ``server-error`` (a fatal line the
server printed), ``report`` (``path``), ``status`` (``watch --once``), ``exit`` (``code``,
``reason``). Fields are added, never renamed.

Writing never fails the watch: a full disk or a closed stderr stops that output, nothing
else (the server must not pay for our problems).
"""

from __future__ import annotations

import errno
import json
import os
import stat
import sys
import time
from typing import Any, List, Optional, TextIO

from fidoctor.textsafe import shown

PREFIX = "fidoctor: "


def open_events(path: str) -> int:
    """The ``--events`` file, opened for appending without ever waiting: a FIFO nobody reads
    blocked a plain open forever (ENXIO now); a block device is refused (never a JSON line
    into a disk); a regular file, a read FIFO or a character device (/dev/null) is fine."""
    flags = (os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
             | os.O_NONBLOCK)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as e:
        if e.errno == errno.ENXIO and stat.S_ISFIFO(os.stat(path).st_mode):
            raise OSError(e.errno, "a FIFO with no reader") from None
        raise
    if stat.S_ISBLK(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "a block device, not a file")
    os.set_blocking(fd, True)
    return fd


class Emitter:
    def __init__(self, events_path: Optional[str] = None, quiet: bool = False,
                 stream: Optional[TextIO] = None) -> None:
        self.quiet = quiet
        self.stream = stream if stream is not None else sys.stderr
        self.events: Optional[TextIO] = None
        self.lines: List[str] = []      # what was said (tests, watch --once)
        if events_path:
            self.events = os.fdopen(open_events(events_path), "w", buffering=1,
                                    encoding="utf-8")

    def emit(self, event: str, text: str = "", **data: Any) -> None:
        text = shown(text)   # one line: a holder's argv may hold newlines or escapes
        rec = {"event": event, "t": round(time.time(), 3), "text": text, **data}
        if text:
            self.say(text)
        if self.events is not None:
            try:
                self.events.write(json.dumps(rec, default=str) + "\n")
            except (OSError, ValueError):
                self.events = None

    def say(self, text: str) -> None:
        """Lines for people only (a diagnosis body), prefixed, unless --quiet."""
        for ln in text.splitlines() or [""]:
            ln = shown(ln)
            self.lines.append(ln)
            if self.quiet:
                continue
            try:
                self.stream.write(PREFIX + ln + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                self.quiet = True

    def close(self) -> None:
        if self.events is not None:
            try:
                self.events.close()
            except OSError:
                pass
            self.events = None


def duration(seconds: float) -> str:
    """``45 s``, ``3 min 20 s``, ``1 h 05 min``."""
    s = int(round(max(seconds, 0)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"
