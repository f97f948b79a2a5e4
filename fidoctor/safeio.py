"""The one way fidoctor reads the files it is handed and writes the files it makes.

Why: fidoctor runs as root on shared boxes. ``report -o /dev/full`` once
replaced the machine's ``/dev/full`` with a regular file (temp file +
``os.replace``); ``--from`` a FIFO blocked forever, ``--from /dev/zero`` grew
without bound, a 100,000-deep JSON raised ``RecursionError``. Every input
(``--from``, journals, resume state, the env file) and every output (``-o``,
snapshots, the env file) goes through here:

* reads open with ``O_NONBLOCK`` (a FIFO cannot block the open), then check
  the *opened* descriptor is a regular file, and stop at a size cap;
  ``follow=False`` adds ``O_NOFOLLOW`` for files fidoctor owns (journals);
* JSON is parsed with a size cap and a nesting-depth cap, so hostile input
  costs a one-line error, never a traceback or gigabytes of memory;
* writes go through a same-directory temp file, fsync and rename, and only
  ever replace a *regular* file (or create a new one): a symlink, directory,
  device node or FIFO named as the output is refused, never replaced;
  files are created mode 0600 unless told otherwise.

Errors are ``UnsafeFile`` (a ``FidoctorError``): one line, exit 2.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from typing import Any, List, Optional

from fidoctor.errors import FidoctorError
from fidoctor.fsutil import file_kind, fsync_dir, write_fsynced

MiB = 1 << 20
SNAPSHOT_CAP = 256 * MiB  # a real 1,000-module snapshot is a few MB
JOURNAL_CAP = 64 * MiB
SMALL_CAP = 8 * MiB  # resume state, env file, caches
MAX_DEPTH = 64  # snapshots nest about 8 deep


class UnsafeFile(FidoctorError):
    """A file fidoctor was asked to read or write is not one it may touch (or too big)."""


def _kind_of(path: str) -> str:
    try:
        return file_kind(os.lstat(path).st_mode)
    except OSError:
        return "absent"


def read_bytes(path: str, cap: int, follow: bool = True, what: str = "file") -> bytes:
    """The bytes of regular file ``path``, at most ``cap`` of them (else ``UnsafeFile``)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP and not follow:
            raise UnsafeFile(f"{what} {path} is a symlink; fidoctor does not follow it") from None
        raise UnsafeFile(f"cannot read {what} {path}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(f"{what} {path} is not a regular file ({file_kind(st.st_mode)}); "
                             "fidoctor reads only regular files")
        if st.st_size > cap:
            raise UnsafeFile(f"{what} {path} is {st.st_size} bytes, more than the {cap} "
                             "fidoctor reads")
        if st.st_size == 0:  # what procfs/sysfs files say: /proc/kmsg's read takes messages
            from fidoctor.mounts import kernel_fs

            kernel = kernel_fs(path)
            if kernel:
                raise UnsafeFile(f"{what} {path} is a file of the kernel's {kernel} interface, "
                                 "not a file fidoctor reads")
        parts: List[bytes] = []
        got = 0
        while True:
            try:
                b = os.read(fd, min(MiB, cap + 1 - got))
            except BlockingIOError:  # a regular file never says this; be safe anyway
                break
            if not b:
                break
            parts.append(b)
            got += len(b)
            if got > cap:
                raise UnsafeFile(f"{what} {path} grew past the {cap} bytes fidoctor reads")
        return b"".join(parts)
    except OSError as e:
        raise UnsafeFile(f"cannot read {what} {path}: {e.strerror or e}") from None
    finally:
        os.close(fd)


def loads_json(data: bytes, where: str, max_depth: int = MAX_DEPTH,
               noun: str = "valid JSON") -> Any:
    """Parse JSON with a nesting-depth cap; bad input raises ``UnsafeFile``."""
    if _depth_exceeds(data, max_depth):
        raise UnsafeFile(f"{where} nests deeper than {max_depth} levels; not fidoctor's JSON")
    try:
        # NaN / Infinity are not JSON (jq and every strict reader refuse them); read as null so
        # they never reach fidoctor's own JSON output from a hand-edited input
        return json.loads(data, parse_constant=lambda _c: None)
    except RecursionError:
        raise UnsafeFile(f"{where} nests too deep; not fidoctor's JSON") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise UnsafeFile(f"{where} is not {noun} ({str(e)[:200]})") from None


def _depth_exceeds(data: bytes, max_depth: int) -> bool:
    """True when ``data`` nests brackets deeper than ``max_depth`` (strings ignored).

    All in C: strings are cut out, everything but brackets deleted, then the
    innermost pairs are peeled off once per allowed level; anything left nests
    deeper (or is unbalanced, which the parser reports anyway).
    """
    if data.count(b"[") + data.count(b"{") <= max_depth:
        return False
    skeleton = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    for _ in range(max_depth):
        if not skeleton:
            return False
        peeled = _PAIR.sub(b"", skeleton)
        if peeled == skeleton:
            return False  # unbalanced: json.loads says so
        skeleton = peeled
    return bool(skeleton)


_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_PAIR = re.compile(rb"\[\]|\{\}")
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")


def read_json(path: str, cap: int, follow: bool = True, what: str = "file",
              max_depth: int = MAX_DEPTH) -> Any:
    return loads_json(read_bytes(path, cap, follow, what), f"{what} {path}", max_depth)


def check_writable_target(path: str, what: str = "output") -> None:
    """Refuse an output path that is not absent or a regular file, or whose dir is missing."""
    kind = _kind_of(path)
    # the option that named the path: "--once flag" → --once; outputs of -o keep "-o FILE"
    opt = what.split()[0] if what.startswith("--") else "-o FILE"
    if kind not in ("absent", "file"):
        raise UnsafeFile(f"cannot write {path}: it is a {kind}, not a regular file; fidoctor "
                         "never replaces one", f"pick another path with {opt}")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UnsafeFile(f"cannot write {path}: no such directory {parent}",
                         f"create it first or pick another path with {opt}")


def write_atomic(path: str, data: bytes, mode: int = 0o600, what: str = "output") -> None:
    """Write ``data`` to ``path`` via a same-dir temp file, fsync and rename.

    Only a missing or regular ``path`` is ever replaced; the check is repeated
    right before the rename. A full disk or a missing directory is a one-line
    ``UnsafeFile``, and the temp file is removed.
    """
    check_writable_target(path, what)
    parent = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(parent, f".{os.path.basename(path)}.fidoctor-{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     mode)
    except OSError as e:
        raise _write_error(path, what, e) from None
    try:
        try:
            write_fsynced(fd, data, mode)
        finally:
            os.close(fd)
        check_writable_target(path, what)  # again, right before the rename
        os.replace(tmp, path)
    except OSError as e:
        _unlink(tmp)
        raise _write_error(path, what, e) from None
    except BaseException:
        _unlink(tmp)
        raise
    fsync_dir(parent)


def _write_error(path: str, what: str, e: OSError) -> UnsafeFile:
    hint = ("free some space (df -h) or pick another path with -o FILE"
            if e.errno in (errno.ENOSPC, errno.EDQUOT) else "pick another path with -o FILE")
    return UnsafeFile(f"cannot write {path} ({what}): {e.strerror or e}", hint)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def read_text_or_none(path: str, cap: int = SMALL_CAP, follow: bool = False) -> Optional[str]:
    """A small regular file's text, or None when absent; ``UnsafeFile`` when it is not safe."""
    if _kind_of(path) == "absent":
        return None
    return read_bytes(path, cap, follow).decode("utf-8", "replace")
