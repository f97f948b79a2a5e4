"""File access that cannot hang or crash on hostile trees.

A FIFO where a log should be blocks ``open()`` forever; a symlink loop raises
ELOOP; a directory may be unreadable. These helpers turn each of those into a
value the caller records as a fact.
"""

from __future__ import annotations

import os
import stat
from typing import Any, Dict, Literal, Optional, Tuple

ELF_MAGIC = b"\x7fELF"


def lstat_info(path: str) -> Dict[str, Any]:
    """Type, size, mtime, inode and device of ``path`` (not following links)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return {"kind": "absent"}
    except PermissionError:
        return {"kind": "denied"}
    except OSError as e:
        return {"kind": "error", "error": e.strerror or str(e)}
    return {"kind": file_kind(st.st_mode), "size": st.st_size, "mtime": st.st_mtime,
            "ino": st.st_ino, "dev": st.st_dev}


def file_kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special"


def open_regular(path: str):
    """Open ``path`` for binary reading only if it is (or links to) a regular file.

    Opens with O_NONBLOCK so a FIFO swapped in after the check cannot block,
    then re-checks the opened descriptor. Raises OSError with a readable
    message otherwise.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"not a regular file ({file_kind(st.st_mode)})")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_head(path: str, n: int) -> Optional[bytes]:
    """First ``n`` bytes of a regular file, or None if it cannot be read."""
    try:
        with open_regular(path) as f:
            return f.read(n)
    except OSError:
        return None


def elf_header_problem(path: str) -> Optional[str]:
    """Why ``path`` is not a loadable ELF shared object, or None if it looks like one.

    Cheap: reads 64 bytes. Deep ELF facts are the elf gatherer's job.
    """
    head = read_head(path, 64)
    if head is None:
        info = lstat_info(path)
        return f"unreadable ({info.get('kind')})"
    try:
        size = os.stat(path).st_size
    except OSError:
        return "unreadable"
    return elf_head_problem(head, size)


def elf_head_problem(head: bytes, size: int) -> Optional[str]:
    """``elf_header_problem`` from the first 64 bytes and the size (no I/O)."""
    if len(head) == 0:
        return "empty file"
    if head[:4] != ELF_MAGIC:
        return "not ELF (invalid ELF header)"
    if len(head) < 52:
        return "truncated ELF header"
    ei_data = head[5]
    order: Literal["little", "big"] = "little" if ei_data == 1 else "big"
    e_type = int.from_bytes(head[16:18], order)
    if e_type != 3:
        return f"ELF but not a shared object (e_type={e_type})"
    is64 = head[4] == 2
    if is64 and len(head) >= 64:
        shoff = int.from_bytes(head[40:48], order)
        shentsize = int.from_bytes(head[58:60], order)
        shnum = int.from_bytes(head[60:62], order)
        if shoff and shoff + shentsize * shnum > size:
            return f"truncated ELF ({size} bytes, section table ends at {shoff + shentsize * shnum})"
    return None


def stat_and_head(path: str, n: int) -> Optional[Tuple[os.stat_result, bytes]]:
    """(fstat, first ``n`` bytes) of a regular file in one open, never following a symlink
    and never blocking on a FIFO; None when it is not a readable regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        return st, os.pread(fd, n, 0)
    except OSError:
        return None
    finally:
        os.close(fd)


def write_fsynced(fd: int, data: bytes, mode: int, mtime_ns: Optional[int] = None) -> None:
    """Write all of ``data`` to ``fd``, set its mode (and mtime) and fsync it; the caller
    closes it."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.fchmod(fd, mode)
    if mtime_ns is not None:
        os.utime(fd, ns=(mtime_ns, mtime_ns))
    os.fsync(fd)


def fsync_dir(path: str) -> None:
    """Make a rename or create inside ``path`` durable (ignored where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
