"""The one reader of /proc/PID/cmdline and /proc/PID/environ (``fidoctor/procfs.py``).

A real process with an empty argument and a non-UTF-8 value is read back; a
reaped pid reads as None, never raises.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from fidoctor.procfs import mapped_files, parse_argv, parse_environ, read_proc


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
        # decoded as os.environ is (surrogateescape), never raising: the bytes survive, so a
        # path in it still names its directory (tests/test_workspace_base.py)
        assert got["ODD"] == os.fsdecode(b"\xff-x") and os.fsencode(got["ODD"]) == b"\xff-x"
        assert read_proc(p.pid, "cmdline", 5) == b"sh\0-c"
    finally:
        os.killpg(p.pid, signal.SIGKILL)  # sh and its sleep
        p.wait()
    assert read_proc(p.pid, "cmdline") is None


def test_entries_without_equals_are_dropped():
    assert parse_environ(b"A=1\0junk\0\0B=\0") == {"A": "1", "B": ""}
    assert parse_argv(b"") == []


MAPS = """\
7f0000000000-7f0000001000 r--p 00000000 08:01 11 /usr/lib/libc.so.6
7f0000001000-7f0000002000 r-xp 00001000 08:01 11 /usr/lib/libc.so.6
7f0000002000-7f0000003000 rw-p 00000000 00:00 0
7f0000003000-7f0000004000 r--p 00000000 08:01 12 /v/lib/python3.11/site-packages/torch/libtorch.so (deleted)
7f0000004000-7f0000005000 r--p 00000000 08:01 13 /opt/my lib/libcudart.so.12
7ffd00000000-7ffd00001000 r-xp 00000000 00:00 0 [vdso]
"""


def test_mapped_files_distinct_by_address_deleted_stripped_or_left_out():
    assert mapped_files(MAPS) == ["/usr/lib/libc.so.6",
                                  "/v/lib/python3.11/site-packages/torch/libtorch.so",
                                  "/opt/my lib/libcudart.so.12", "[vdso]"]
    assert "/v/lib/python3.11/site-packages/torch/libtorch.so" not in mapped_files(
        MAPS, deleted=False)


def test_this_process_maps_its_own_interpreter():
    raw = read_proc(os.getpid(), "maps", -1)
    assert raw is not None
    assert os.path.realpath(sys.executable) in mapped_files(raw.decode("utf-8", "replace"))
