"""What a server that exited left running: its session (or process group) and the holders of
its output pipes.

Why: a server command that forks the real server and exits at once (a daemonizing wrapper, a
launcher script with ``&``) ends ``fidoctor run`` with code 0 while the real server compiles on
unwatched; saying nothing made it look watched. The processes still in the server's session
(its process group, on a terminal) and those that still hold the pipes fidoctor's forwarder
reads (a daemon that called ``setsid`` but kept its stdout) are named, with the command to
watch them. One pass over ``/proc``, cut at ``budget_s``; a daemon that closed its output and
left the session cannot be seen, and is not claimed.
"""

from __future__ import annotations

import os
import time
from typing import Iterable, List, Set

from fidoctor.procfs import read_stat


def left_running(group: int, pipe_inodes: Iterable[int], exclude: Iterable[int],
                 budget_s: float = 1.0) -> List[int]:
    """Live pids whose session or process group is ``group``, or that hold one of the pipes."""
    pipes = {f"pipe:[{i}]" for i in pipe_inodes}
    skip = set(exclude)
    found: Set[int] = set()
    stop = time.monotonic() + budget_s
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    for name in names:
        if not name.isdigit() or time.monotonic() > stop:
            continue
        pid = int(name)
        if pid in skip:
            continue
        st = read_stat(pid)
        if st is None or st["state"] in ("Z", "X"):
            continue
        if group in (st["sid"], st["pgid"]):
            found.add(pid)
            continue
        if pipes and _holds(pid, pipes):
            found.add(pid)
    return sorted(found)


def _holds(pid: int, pipes: Set[str]) -> bool:
    d = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(d)
    except OSError:
        return False
    for fd in fds[:4096]:
        try:
            if os.readlink(f"{d}/{fd}") in pipes:
                return True
        except OSError:
            continue
    return False
