"""The forwarder between the server's stdout/stderr and ours, with a copy for fidoctor.

Why a separate process: if the server wrote into a pipe that fidoctor reads, fidoctor
dying (OOM killer, a bug, SIGKILL) would leave the server writing into a pipe nobody
reads: blocked forever, or killed by SIGPIPE. The tap runs in a session of its own (no
terminal signal reaches it), inherits our real stdout/stderr, copies every byte to them
with blocking writes (so back-pressure reaches the server as before), and offers a copy to
fidoctor through a non-blocking pipe: a full or closed copy pipe drops the copy, never the
output. It exits when every server-side writer has closed (the server and everything it
started that kept the descriptors), so it outlives fidoctor by design.

A stream that is a terminal is not tapped (``--tap auto``): the server keeps its terminal
(colours, progress bars, line buffering) and fidoctor reads nothing from it.

Copy framing: 1 byte stream index, 2 bytes length, the data; frames ≤ PIPE_BUF so each
non-blocking write is all or nothing.

Run as a script: ``python tap.py IN_FD:OUT_FD[,IN_FD:OUT_FD] COPY_FD``.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from typing import Dict, List, Optional, Tuple

FRAME = 4096 - 3
SCRIPT = os.path.abspath(__file__)


def _main(argv: List[str]) -> int:
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTERM, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    pairs: List[Tuple[int, int]] = []
    for spec in argv[0].split(","):
        a, b = spec.split(":")
        pairs.append((int(a), int(b)))
    copy: Optional[int] = int(argv[1])
    index = {src: i for i, (src, _dst) in enumerate(pairs)}
    dst_of: Dict[int, int] = dict(pairs)
    live = [src for src, _ in pairs]
    while live:
        try:
            ready, _, _ = select.select(live, [], [])
        except InterruptedError:
            continue
        for src in ready:
            try:
                data = os.read(src, 65536)
            except OSError:
                data = b""
            if not data:
                live.remove(src)
                os.close(src)
                continue
            if not _write_all(dst_of[src], data):
                live.remove(src)   # our stdout is gone: the server gets EPIPE, as it would have
                os.close(src)
            if copy is not None:
                copy = _offer(copy, index[src], data)
    return 0


def _write_all(fd: int, data: bytes) -> bool:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except InterruptedError:
            continue
        except OSError:
            return False
        view = view[n:]
    return True


def _offer(fd: int, idx: int, data: bytes) -> Optional[int]:
    for i in range(0, len(data), FRAME):
        part = data[i:i + FRAME]
        try:
            os.write(fd, bytes([idx]) + len(part).to_bytes(2, "big") + part)
        except BlockingIOError:
            continue                       # fidoctor is behind: drop the copy, keep going
        except OSError:
            os.close(fd)                   # fidoctor is gone: forward only, from now on
            return None
    return fd


class Tap:
    """Start the tap for the streams to capture; hand the write ends to the server."""

    def __init__(self, streams: Dict[str, int]) -> None:
        self.names: List[str] = list(streams)
        self.server_fds: Dict[str, int] = {}
        self.proc: Optional[subprocess.Popen] = None
        self.copy_fd: Optional[int] = None
        self.pipe_inodes: List[int] = []   # the server's ends: who still holds them writes here
        self._frames = b""
        if not streams:
            return
        copy_r, copy_w = os.pipe()
        os.set_blocking(copy_w, False)
        os.set_blocking(copy_r, False)
        pairs: List[Tuple[int, int]] = []
        to_close = [copy_w]
        for name, real in streams.items():
            r, w = os.pipe()
            self.server_fds[name] = w
            pairs.append((r, real))
            to_close.append(r)
        spec = ",".join(f"{r}:{d}" for r, d in pairs)
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", SCRIPT, spec, str(copy_w)],
            pass_fds=[*(r for r, _ in pairs), *(d for _, d in pairs), copy_w],
            stdin=subprocess.DEVNULL, start_new_session=True, close_fds=True)
        for fd in to_close:
            os.close(fd)
        self.copy_fd = copy_r

    def started(self) -> None:
        """The server holds its ends now: drop ours, so EOF means the server side closed."""
        for fd in self.server_fds.values():
            try:
                self.pipe_inodes.append(os.fstat(fd).st_ino)
            except OSError:
                pass
            os.close(fd)
        self.server_fds = {}

    def read(self) -> List[Tuple[str, bytes]]:
        """Whatever copies are waiting, as (stream name, bytes)."""
        if self.copy_fd is None:
            return []
        while True:
            try:
                chunk = os.read(self.copy_fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                os.close(self.copy_fd)
                self.copy_fd = None
                break
            self._frames += chunk
        out = []
        while len(self._frames) >= 3:
            idx, n = self._frames[0], int.from_bytes(self._frames[1:3], "big")
            if len(self._frames) < 3 + n:
                break
            out.append((self.names[idx], self._frames[3:3 + n]))
            self._frames = self._frames[3 + n:]
        return out

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout: float) -> None:
        """Let the tap forward what is left; it keeps running on its own if writers remain."""
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
