"""The one reader of /proc/PID/cmdline and /proc/PID/environ (``fidoctor/procfs.py``).

A real process with an empty argument and a non-UTF-8 value is read back; a
reaped pid reads as None, never raises.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

from fidoctor.procfs import parse_argv, parse_environ, read_proc


def test_real_process_argv_and_environ(tmp_path):
    env = {"FIDOCTOR_T": "a=b", "ODD": os.fsdecode(b"\xff-x"), "EMPTY": ""}
    p = subprocess.Popen([b"sh", b"-c", b"sleep 30; :", b"", b"x y"],
                         env={k.encode(): os.fsencode(v) for k, v in env.items()},
                         start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not (read_proc(p.pid, "cmdline") or b"").startswith(b"sh\0"):  # exec'd yet?
            assert time.monotonic() < deadline, "sh never exec'd"
            time.sleep(0.01)
        argv = parse_argv(read_proc(p.pid, "cmdline") or b"")
        assert argv == ["sh", "-c", "sleep 30; :", "x y"]  # the empty argument is dropped
        got = parse_environ(read_proc(p.pid, "environ") or b"")
        assert got["FIDOCTOR_T"] == "a=b" and got["EMPTY"] == ""
        assert got["ODD"] == "\ufffd-x"  # decoded with replacement, never raising
        assert read_proc(p.pid, "cmdline", 5) == b"sh\0-c"
    finally:
        os.killpg(p.pid, signal.SIGKILL)  # sh and its sleep
        p.wait()
    assert read_proc(p.pid, "cmdline") is None


def test_entries_without_equals_are_dropped():
    assert parse_environ(b"A=1\0junk\0\0B=\0") == {"A": "1", "B": ""}
    assert parse_argv(b"") == []
