"""Read a log for the scanner: a file (plain or gzip), or ``-`` for stdin, streamed.

Budgets: at most ``max_bytes`` of (decompressed) text and ``max_s`` seconds;
past either the scan stops and says how far it got (``complete: false``), so
a 50 GB log or a stdin that never closes cannot hang ``diagnose``. Lines are
read in blocks of ``BLOCK`` bytes; a line longer than ``MAX_LINE`` keeps its start
and drops the rest, so a log without newlines (binary garbage, one huge JSON
blob) keeps memory flat. Only regular files
(or stdin) are opened, without blocking: a FIFO or device named as a log is
an error, not a hang.
"""

from __future__ import annotations

import gzip
import io
import os
import select
import shlex
import sys
import time
from typing import Any, BinaryIO, Dict, Optional, cast

from fidoctor.errors import FidoctorError
from fidoctor.fsutil import open_regular
from fidoctor.serverlog.scanner import Scanner

MAX_BYTES = 2 << 30
MAX_S = 30.0  # also for stdin: a pipe that stays open (kubectl logs -f) stops here
MAX_LINE = 64 << 10
BLOCK = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
# Other compressors' output is binary noise to the scanner ("no JIT activity": a healthy
# verdict for a log never read): named, with the command that makes it readable.
OTHER_MAGIC = ((b"\x28\xb5\x2f\xfd", "zstd", "zstd -dc"), (b"\xfd7zXZ\x00", "xz", "xz -dc"),
               (b"\x04\x22\x4d\x18", "lz4", "lz4 -dc"), (b"PK\x03\x04", "zip", "unzip -p"),
               (b"7z\xbc\xaf\x27\x1c", "7z", "7z x -so"))
SAMPLE = 1 << 20  # bytes (NULs left out) judged for text: control bytes and invalid UTF-8
NOT_TEXT = 0.10   # more than this share of odd bytes: not a text log
# Control bytes no text log holds (ANSI \x1b, tqdm's \r, BEL ending OSC, \b, \t, \n are text).
_TEXT = bytes(c for c in range(256) if not (c < 32 and c not in (7, 8, 9, 10, 13, 27) and c
                                            or c == 127))


def _compressed(head: bytes):
    """(name, decompress command) of a compressor whose output ``head`` starts, or None."""
    for magic, name, cmd in OTHER_MAGIC:
        if head.startswith(magic):
            return name, cmd
    if head[:3] == b"BZh" and head[3:4] in b"123456789" and head[4:10] in (
            b"\x31\x41\x59\x26\x53\x59", b"\x17\x72\x45\x38\x50\x90"):
        return "bzip2", "bzip2 -dc"
    return None


def not_text(n: int, nul: int, sampled: int, odd: int, blank: bool = False) -> str:
    """Why what was read is no text log ("" if it is one): an empty or blank file shows nothing
    either way, so it is not "a log without JIT activity" (a healthy verdict for nothing)."""
    if n == 0:
        return "empty (0 bytes): nothing to read (the server wrote elsewhere?)"
    if blank:
        return f"nothing but blank lines ({n} bytes)"
    if n and nul == n:
        return f"nothing but NUL bytes ({n} read): a sparse or zeroed file, not a log"
    if sampled >= 64 and odd > NOT_TEXT * sampled:
        return (f"not a text log: {100 * odd // sampled}% of its first {sampled} bytes are "
                "control bytes or invalid UTF-8 (binary, or compressed by another tool)")
    return ""


class DeadlineReader(io.RawIOBase):
    """A pipe (stdin) read with a deadline: ``select`` before each read, so ``kubectl logs -f``
    that never ends, or a writer that stalls, stops the scan at its time budget instead of
    blocking in ``read`` forever."""

    def __init__(self, fd: int, deadline: float) -> None:
        self.fd, self.deadline = fd, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0 or not select.select([self.fd], [], [], left)[0]:
            raise TimeoutError("no more input before the time budget ran out")
        data = os.read(self.fd, len(b))
        b[:len(data)] = data
        return len(data)


def _open(path: str, deadline: float) -> BinaryIO:
    if path == "-":
        fd = sys.stdin.fileno()
        if os.isatty(fd):
            raise FidoctorError("--log -: stdin is a terminal, not a log",
                                "pipe one in: kubectl logs POD | fidoctor diagnose --log-only --log -")
        return cast(BinaryIO, io.BufferedReader(DeadlineReader(fd, deadline), BLOCK))
    from fidoctor.mounts import kernel_fs

    kernel = kernel_fs(path)
    if kernel:  # /proc/kmsg is a "regular file" whose read blocks and takes the messages
        raise FidoctorError(
            f"--log {path}: a file of the kernel's {kernel} interface, not a log (reading it can "
            "block for good, or take messages from whoever else reads them)",
            "save what you need first: dmesg > kernel.log (or journalctl -k > kernel.log), "
            "then --log kernel.log")
    try:
        return open_regular(path)
    except FileNotFoundError:
        raise FidoctorError(f"--log {path}: no such file") from None
    except PermissionError:
        raise FidoctorError(f"--log {path}: permission denied") from None
    except IsADirectoryError:
        raise FidoctorError(f"--log {path}: is a directory") from None
    except OSError as e:
        raise FidoctorError(f"--log {path}: {e.strerror or e}",
                            "pass a regular file (plain or .gz), or - for stdin") from None


def scan_file(path: str, max_bytes: int = MAX_BYTES, max_s: float = MAX_S,
              scanner: Optional[Scanner] = None) -> Dict[str, Any]:
    """Scan one log; the scanner's result plus how the read went."""
    t0 = time.monotonic()
    raw = _open(path, t0 + max_s)
    sc = scanner or Scanner("<stdin>" if path == "-" else path)
    stream: BinaryIO = raw
    info: Dict[str, Any] = {"gzip": False, "bytes_read": 0, "complete": True, "stopped": ""}
    try:
        # open_regular and stdin.buffer are BufferedReaders; anything else gets wrapped
        buffered = (raw if isinstance(raw, io.BufferedReader)
                    else io.BufferedReader(cast(io.RawIOBase, raw)))
        try:
            head = buffered.peek(10)[:10]
        except TimeoutError:  # open and silent: the loop's first read says the budget is spent
            head = b""
        other = _compressed(head)
        if other:
            shown = "-" if path == "-" else shlex.quote(path)
            raise FidoctorError(
                f"--log {path}: compressed with {other[0]} (fidoctor reads plain text or gzip)",
                f"{other[1]} {shown} | fidoctor diagnose --log -   (add --log-only for a paste)"
                if path != "-" else f"decompress it first: … | {other[1]} | fidoctor diagnose "
                "--log -")
        if head[:2] == GZIP_MAGIC:
            stream = gzip.GzipFile(fileobj=buffered)  # type: ignore[assignment]
            info["gzip"] = True
        else:
            stream = buffered
        n = nul = sampled = odd = 0
        blank = True  # no byte but whitespace so far
        carry = b""
        skipping = False  # inside a line longer than MAX_LINE: its rest is dropped
        while True:
            try:
                block = stream.read1(BLOCK)  # type: ignore[attr-defined]  # what is there: a timeout loses nothing
            except TimeoutError:
                info.update(complete=False, stopped=f"time budget: {max_s:g} s (input still open)")
                break
            except (OSError, EOFError) as e:  # truncated or corrupt gzip: keep what was read
                info.update(complete=False, stopped=f"read error after {n} bytes: {e}")
                break
            if not block:
                break
            n += len(block)
            if blank and block.strip():
                blank = False
            zeros = block.count(b"\0")
            nul += zeros
            if sampled < SAMPLE and zeros < len(block):
                piece = (block.translate(None, b"\0") if zeros else block)[:SAMPLE - sampled]
                sampled += len(piece)
                odd += len(piece.translate(None, _TEXT)) + \
                    piece.decode("utf-8", "replace").count("\ufffd")
            if n >= max_bytes:
                info.update(complete=False, stopped=f"size budget: read {n} bytes")
            elif time.monotonic() - t0 > max_s:
                info.update(complete=False, stopped=f"time budget: {max_s:g} s")
            data = carry + block
            carry = b""
            if skipping:  # drop the rest of an over-long line, up to its newline
                nl = data.find(b"\n")
                if nl < 0:
                    if not info["complete"]:  # a budget ends an endless line too (a sparse file)
                        break
                    continue
                data, skipping = data[nl + 1:], False
            cut = data.rfind(b"\n")
            if cut < 0:
                carry = data
            else:
                sc.feed_block(data[:cut].decode("utf-8", "replace") + "\n")
                carry = data[cut + 1:]
            if len(carry) > MAX_LINE:  # no newline for too long: keep the start, drop the rest
                sc.feed(carry[:MAX_LINE].decode("utf-8", "replace"))
                carry, skipping = b"", True
            if not info["complete"]:
                break
        if carry and not skipping:
            sc.feed(carry.decode("utf-8", "replace"))
        info["bytes_read"] = n
        # nothing read before a budget ran out is said by ``stopped``, not called empty
        info["not_text"] = not_text(n, nul, sampled, odd, blank) if n or info["complete"] else ""
    finally:
        if path != "-":
            raw.close()
    result = sc.close()
    result.update(info)
    result["elapsed_s"] = round(time.monotonic() - t0, 3)
    try:
        result["size"] = os.path.getsize(path) if path != "-" else None
    except OSError:
        result["size"] = None
    return result
