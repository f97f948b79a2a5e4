"""``--log`` pointed at what is not a plain server log: the read must stay in its budget and the
verdict must never be "healthy" for what could not be read.

Real files: a sparse file (a log zeroed by ``truncate``), one endless line, real random bytes,
real ``zstd``/``xz``/``bzip2`` output of a real captured FlashInfer failure (see
``serverlog_helpers``), and a ``copytruncate``-style log (a NUL hole, then text).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import run_cli

from fidoctor.serverlog import analyse

pytestmark = pytest.mark.timeout(300)


def test_an_endless_line_stops_at_the_size_budget(tmp_path):
    """Inside a line longer than 64 KiB the reader skipped the rest of the line block by block
    with ``continue`` — past the size and time budget checks: a 4 GB sparse log was read to
    its end (12 s with ``--log-timeout 10``) and called complete ("healthy")."""
    p = tmp_path / "sparse.log"
    with open(p, "wb") as f:
        f.truncate(64 << 20)  # 64 MiB of NUL, no newline: a log zeroed in place
    d = analyse([str(p)], max_bytes=4 << 20)
    f = d["files"][0]
    assert f["complete"] is False and "size budget" in f["stopped"], f
    assert f["bytes_read"] < 8 << 20, f


def _lcuda_text() -> bytes:
    """A real captured FlashInfer failure (``cannot find -lcuda``), as plain server output."""
    from serverlog_helpers import capture, plain

    return ("\n".join(plain(capture("lcuda"))) + "\n").encode()


@pytest.mark.parametrize("tool", ["xz", "bzip2", "zstd"])
def test_a_log_compressed_by_another_tool_is_refused_with_the_command(tmp_path, tool):
    """A logrotate'd ``server.log.xz`` / ``.bz2`` / ``.zst`` (a real JIT failure inside) was read
    as binary noise: "no FlashInfer JIT activity in this log", healthy, exit 0. Now: exit 2
    naming the compressor, and the printed command really reads it."""
    import bz2
    import lzma
    import shutil

    text = _lcuda_text()
    p = tmp_path / f"server.log.{tool}"
    if tool == "xz":
        p.write_bytes(lzma.compress(text))
    elif tool == "bzip2":
        p.write_bytes(bz2.compress(text))
    else:
        if not shutil.which("zstd"):
            pytest.skip("no zstd binary here to write a real .zst")
        subprocess.run(["zstd", "-q", "-o", str(p)], input=text, check=True, timeout=60)
    r = run_cli(["diagnose", "--log-only", "--log", str(p)], timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"compressed with {tool}" in r.stderr and "Traceback" not in r.stderr, r.stderr
    hint = r.stderr.split("hint: ", 1)[1].split("   (", 1)[0].strip()
    assert hint == f"{tool} -dc {p} | fidoctor diagnose --log -", hint
    if shutil.which(tool):
        dec = subprocess.run([tool, "-dc", str(p)], capture_output=True, check=True, timeout=60)
        r = run_cli(["diagnose", "--log-only", "--json", "--log", "-"],
                    input_text=dec.stdout.decode(), timeout=60)
        assert "cuda-toolkit-unusable" in r.stdout, r.stdout[-2000:]


def test_binary_and_nul_files_are_never_called_healthy(tmp_path):
    """Random bytes (a core file, a tarball) and a file of NULs were "a log with no JIT
    activity": healthy, exit 0. Now they are not read (inconclusive; ``--log-only``: not
    checked, exit 2); a real log beside one still gives its findings."""
    rnd = tmp_path / "core.bin"
    rnd.write_bytes(os.urandom(2 << 20))
    nul = tmp_path / "zeroed.log"
    nul.write_bytes(bytes(1 << 20))
    for p, words in ((rnd, "not a text log"), (nul, "nothing but NUL bytes")):
        r = run_cli(["diagnose", "--log-only", "--json", "--log", str(p)], timeout=60)
        doc = json.loads(r.stdout)
        assert r.returncode == 2 and doc["summary"]["verdict"] != "healthy", doc["summary"]
        assert words in doc["summary"]["unchecked"], doc["summary"]
        assert "log-no-jit-activity" not in [f["id"] for f in doc["findings"]]
    real = tmp_path / "server.log"
    real.write_bytes(_lcuda_text())
    r = run_cli(["diagnose", "--log-only", "--json", "--log", str(real), "--log", str(rnd)],
                timeout=60)
    doc = json.loads(r.stdout)
    assert r.returncode == 1 and "cuda-toolkit-unusable" in [f["id"] for f in doc["findings"]]
    assert any("not a text log" in i["reason"] for i in doc["inconclusive"]), doc["inconclusive"]


def test_a_copytruncated_log_with_a_nul_hole_is_still_text(tmp_path):
    """Quiet twin: logrotate's ``copytruncate`` while the server writes at its old offset leaves
    a hole of NULs before the new lines. That is a text log: its failure is found, nothing is
    said about binary."""
    p = tmp_path / "server.log"
    with open(p, "wb") as f:
        f.truncate(8 << 20)
        f.seek(8 << 20)
        f.write(_lcuda_text())
    d = analyse([str(p)])
    assert d["files"][0]["not_text"] == "", d["files"][0]["not_text"]
    assert "cuda-toolkit-unusable" in [f["id"] for f in d["findings"]]


def test_a_kernel_interface_file_is_refused_not_read(tmp_path):
    """``--log /proc/kmsg`` (a hurried look for the OOM killer's lines): a "regular file" to
    stat whose read blocks until the kernel logs something — ``--log-timeout 3`` never ended
    it — and takes each message from syslog/journald. Files of procfs/sysfs/debugfs… are
    refused before they are opened."""
    if not os.path.exists("/proc/kmsg"):
        pytest.skip("no /proc/kmsg here")
    for path in ("/proc/kmsg", "/proc/self/status"):
        r = run_cli(["diagnose", "--log-only", "--log", path, "--log-timeout", "3"], timeout=60)
        assert r.returncode == 2, (path, r.stdout, r.stderr)
        assert "kernel's proc interface" in r.stderr and "dmesg >" in r.stderr, r.stderr


def test_a_build_log_variable_naming_a_kernel_file_is_not_read(tmp_path):
    """``FLASHINFER_JIT_BUILD_LOG=/proc/kmsg`` in the server's environment: the gatherer sat in
    the blocking read for its whole budget ("gave up after 5 s"), taking kernel messages."""
    if not os.path.exists("/proc/kmsg"):
        pytest.skip("no /proc/kmsg here")
    out = tmp_path / "s.json"
    r = run_cli(["snapshot", "--no-redact", "-o", str(out)], timeout=120,
                env=dict(os.environ, FLASHINFER_JIT_BUILD_LOG="/proc/kmsg",
                         FLASHINFER_WORKSPACE_BASE=str(tmp_path / "ws")))
    assert r.returncode == 0, r.stderr
    sec = json.loads(out.read_text())["sections"]["jit_build_log"]
    assert sec["status"] == "ok" and "kernel's proc interface" in sec["data"]["error"], sec


@pytest.mark.parametrize("body", [b"", b"\n\n   \n"])
def test_an_empty_or_blank_log_is_not_checked_not_healthy(tmp_path, body):
    """``--log`` of an empty file (the server wrote to the other stream; ``kubectl logs`` of the
    wrong container) said "no FlashInfer JIT activity … the cause is elsewhere", healthy, exit
    0. An empty or blank log shows nothing either way: not read; ``--log-only``: exit 2. Same
    for stdin from /dev/null."""
    p = tmp_path / "server.log"
    p.write_bytes(body)
    r = run_cli(["diagnose", "--log-only", "--json", "--log", str(p)], timeout=60)
    doc = json.loads(r.stdout)
    assert r.returncode == 2 and doc["summary"]["verdict"] != "healthy", doc["summary"]
    assert "log-no-jit-activity" not in [f["id"] for f in doc["findings"]]
    with open(os.devnull, "rb") as null:
        r = subprocess.run([sys.executable, "-m", "fidoctor", "diagnose", "--log-only", "--log",
                            "-"], stdin=null, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "empty (0 bytes)" in r.stdout, r.stdout + r.stderr
