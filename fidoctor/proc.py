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
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

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
