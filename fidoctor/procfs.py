"""Bounded readers of ``/proc/PID/*`` that never raise: the one parser of each format
(``cmdline``, ``environ``, ``maps`` lines, ``stat`` fields, start times).

Why one place: the NUL-separated ``cmdline`` and ``environ`` formats (and the
``maps`` lines) were parsed in five modules, each with its own cap and its own idea of an empty
argument. A process can vanish or belong to someone else between listing and
reading; every reader here returns ``None`` for that, and the caller decides
what an unreadable process means.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Optional, Tuple


def read_proc(pid: int, name: str, cap: int = 1 << 20) -> Optional[bytes]:
    """The first ``cap`` bytes (-1: all) of ``/proc/PID/<name>``; None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read(cap)
    except OSError:
        return None


def parse_argv(raw: bytes) -> List[str]:
    """``/proc/PID/cmdline`` bytes as argv (empty arguments dropped)."""
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]


def parse_environ(raw: bytes) -> Dict[str, str]:
    """``/proc/PID/environ`` bytes as a dict (entries without ``=`` dropped).

    Decoded as ``os.environ`` is (the file system encoding, undecodable bytes kept as
    surrogates): a ``FLASHINFER_WORKSPACE_BASE`` or ``HOME`` with non-UTF-8 bytes must still
    name the directory the server uses (with U+FFFD it named none, and a broken cache there
    was "no FlashInfer cache")."""
    env: Dict[str, str] = {}
    for item in raw.split(b"\0"):
        k, sep, v = item.partition(b"=")
        if sep:
            env[os.fsdecode(k)] = os.fsdecode(v)
    return env


def mapped_files(maps: str, deleted: bool = True) -> List[str]:
    """Distinct paths of ``/proc/PID/maps`` text, by address (pseudo-paths like ``[vdso]``
    too). A file deleted since it was mapped loses its `` (deleted)`` suffix, or is left
    out with ``deleted=False``."""
    seen: Dict[str, None] = {}
    for line in maps.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 6:
            continue  # anonymous
        path = parts[5].strip()
        if path.endswith(" (deleted)"):
            if not deleted:
                continue
            path = path[: -len(" (deleted)")]
        seen.setdefault(path)
    return list(seen)


# --- /proc/PID/stat: the one reader of its fields ---------------------------------------
#
# Every module that needs a field of /proc/PID/stat reads it here (proctree.scan_table,
# servers, snapshot.context, live.observe/session, the processes gatherer), so that three
# rules exist once:
# * the comm may hold spaces and ")" (a process can name itself "a) R (b"): the fields start
#   after the *last* ")";
# * a pid that vanished (or any unreadable or malformed line) is None, never an exception;
# * start times are clock ticks since boot; ``start_epoch`` turns them into seconds since
#   the epoch the way psutil's create_time does (btime + ticks / SC_CLK_TCK).

STAT_FIELDS = {"state": 0, "ppid": 1, "pgid": 2, "sid": 3, "flags": 6, "minflt": 7,
               "majflt": 9, "utime": 11, "stime": 12, "starttime": 19}  # man 5 proc, after "comm)"
PF_KTHREAD = 0x00200000  # the "flags" bit of a kernel thread (include/linux/sched.h)


def read_stat_raw(pid: object) -> Optional[bytes]:
    """The bytes of ``/proc/PID/stat``, or None when the pid is gone or unreadable.

    ``pid`` may be an int or the digit string of a ``/proc`` entry (``scan_table`` passes
    those as they come, to save a conversion per process). Raw ``os.open``/``os.read``: no
    buffered file object, several times cheaper over a whole process table.
    """
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, 4096)
    except OSError:  # ESRCH: it exited between the open and the read
        return None
    finally:
        os.close(fd)


def split_stat(raw: bytes, maxsplit: int = -1) -> Optional[Tuple[str, List[bytes]]]:
    """(comm, the fields after it) of a ``/proc/PID/stat`` line, or None if it is not one.

    ``maxsplit``: split only that many fields (the rest stays one item), for callers that
    need the first few of a whole table.
    """
    i, j = raw.find(b"("), raw.rfind(b")")
    if i < 0 or j < i:
        return None
    return raw[i + 1:j].decode("utf-8", "replace"), raw[j + 1:].split(None, maxsplit)


def read_stat(pid: int) -> Optional[Dict[str, Any]]:
    """Fields of ``/proc/PID/stat`` by name (``STAT_FIELDS``; times in clock ticks), or None.

    ``majflt`` (major page faults: pages read back from disk) is what psutil does not
    give: a compiler whose own code is reclaimed under a memory limit refaults it
    thousands of times a second.
    """
    raw = read_stat_raw(pid)
    parts = split_stat(raw) if raw is not None else None
    if parts is None:
        return None
    comm, rest = parts
    out: Dict[str, Any] = {"comm": comm}
    try:
        for name, k in STAT_FIELDS.items():
            out[name] = rest[k].decode() if name == "state" else int(rest[k])
    except (IndexError, ValueError):
        return None
    return out


def is_running(pid: int) -> bool:
    """The pid exists and has not exited: a zombie (awaiting its parent's wait()) or a dead
    task ("Z"/"X") counts as gone."""
    st = read_stat(pid)
    return st is not None and st["state"] not in ("Z", "X")


_BOOT: Optional[float] = None


def boot_time() -> float:
    """Seconds since the epoch at boot (``btime`` of ``/proc/stat``), read once."""
    global _BOOT
    if _BOOT is None:
        try:
            with open("/proc/stat") as f:
                _BOOT = float(next(ln for ln in f if ln.startswith("btime")).split()[1])
        except (OSError, StopIteration, ValueError, IndexError):
            _BOOT = time.time() - time.monotonic()
    return _BOOT


def start_epoch(ticks: float) -> float:
    """A ``starttime`` (clock ticks since boot) as seconds since the epoch."""
    return boot_time() + ticks / os.sysconf("SC_CLK_TCK")
