"""Real mounts for the filesystem probes: tmpfs inside the test's own dir, always unmounted.

Tests run as root (here and in CI). Every mount made here lives under the
test's tmp dir and is unmounted (lazily if busy) by the context manager that
made it; nothing else on the machine is touched.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path
from typing import Iterator


def _run(*argv: str) -> None:
    subprocess.run(list(argv), check=True, capture_output=True, text=True, timeout=30)


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "16m", inodes: str = "") -> Iterator[Path]:
    """A real tmpfs of ``size`` (and ``nr_inodes``) mounted at ``path`` for the block."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (f",nr_inodes={inodes}" if inodes else "")
    _run("mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path))
    try:
        yield path
    finally:
        r = subprocess.run(["umount", str(path)], capture_output=True, timeout=30)
        if r.returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def remount(path: Path, opts: str) -> None:
    _run("mount", "-o", f"remount,{opts}", str(path))


def fill(path: Path, leave_bytes: int = 0) -> None:
    """Write a file until the filesystem at ``path`` has only ``leave_bytes`` left."""
    import os

    st = os.statvfs(path)
    n = st.f_bavail * st.f_frsize - leave_bytes
    with open(path / "filler", "wb") as f:
        chunk = b"\0" * (1 << 20)
        while n > 0:
            try:
                n -= f.write(chunk[: min(len(chunk), n)])
            except OSError:
                break
