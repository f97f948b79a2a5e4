"""Checks every step makes before it touches anything: symlinks, writability, hashes.

fidoctor changes only the path a step names. A symlink anywhere between the
root the fix works in (a workspace, a site-packages dir) and that path could
send a rename or a write somewhere else entirely, so a step refuses when the
resolved parent leaves its root. Nothing here escalates privileges: a path
the user cannot write is reported, never retried with sudo.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from typing import Any, Dict, List

from fidoctor.errors import FidoctorError

CHUNK = 1 << 20
HASH_CAP = 512 << 20  # bigger files are fingerprinted (size, mtime, inode, head, tail)


class StepError(FidoctorError):
    """A step could not (or must not) be done; the message says which and why."""


def sha256_file(path: str) -> str:
    """sha256 of a regular file's bytes, never following a symlink or opening a FIFO."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StepError(f"{path}: not a regular file")
        h = hashlib.sha256()
        while True:
            b = os.read(fd, CHUNK)
            if not b:
                return h.hexdigest()
            h.update(b)
    finally:
        os.close(fd)


def sha256_or_none(path: str) -> Any:
    try:
        return sha256_file(path)
    except (OSError, StepError):
        return None


def inside(path: str, root: str) -> bool:
    root = os.path.realpath(root)
    p = os.path.realpath(path)
    return p == root or p.startswith(root.rstrip(os.sep) + os.sep)


def check_parent_inside(path: str, root: str) -> None:
    """Refuse when a symlinked component would take ``path`` out of ``root``."""
    parent = os.path.dirname(os.path.normpath(path))
    if not inside(parent, root):
        raise StepError(
            f"{path}: a symlink leads it out of {root} (to {os.path.realpath(parent)}); "
            "fidoctor does not follow symlinks out of the path it changes",
            "move the directory by hand if that is really what you want",
        )


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def root_id(root: str) -> List[int]:
    """(device, inode) of ``root``: recorded with a step, compared again at undo."""
    st = os.stat(root)
    return [st.st_dev, st.st_ino]


def open_dir_below(root: str, path: str, create: bool = False) -> int:
    """A descriptor of directory ``path``, opened component by component from ``root``.

    Every component below ``root`` is opened with ``O_NOFOLLOW`` relative to
    its parent's descriptor, so a symlink swapped in anywhere between the root
    and the step's directory (``cached_ops`` replaced by a link to elsewhere)
    cannot redirect a rename: the walk fails instead. ``create`` makes missing
    components (mode 0755), also relative to their parent's descriptor.
    """
    rel = os.path.relpath(os.path.normpath(path), os.path.normpath(root))
    parts = [] if rel == "." else rel.split(os.sep)
    if any(c in ("..", "") for c in parts):
        raise StepError(f"{path} is not inside {root}; fidoctor changes nothing outside it")
    fd = os.open(root, _DIR_FLAGS)
    try:
        for i, comp in enumerate(parts):
            try:
                nfd = os.open(comp, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(comp, 0o755, dir_fd=fd)
                nfd = os.open(comp, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    where = os.path.join(root, *parts[:i + 1])
                    raise StepError(f"{where} is no longer a directory (a symlink or file was "
                                    "put there since the plan); fidoctor does not follow it, "
                                    "nothing was moved", "look at it, then re-run fidoctor") \
                        from None
                raise
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


_RENAME_NOREPLACE = 1


def rename_at(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
    """``renameat2(…, RENAME_NOREPLACE)``: never replaces an existing ``dst``.

    Falls back to a plain ``rename`` (after an existence check) where the file
    system or libc lacks renameat2.
    """
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        fn = None
    if fn is not None:
        if fn(src_fd, os.fsencode(src), dst_fd, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS):
            raise OSError(err, os.strerror(err), dst)
    try:
        os.lstat(dst, dir_fd=dst_fd)
        raise OSError(errno.EEXIST, os.strerror(errno.EEXIST), dst)
    except FileNotFoundError:
        pass
    os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)


def check_writable_dir(d: str, why: str) -> None:
    """The directory must accept entries being added or removed (rename, create)."""
    if not os.path.isdir(d):
        raise StepError(f"{d}: not a directory ({why})")
    if not os.access(d, os.W_OK | os.X_OK):
        raise StepError(
            f"{d}: not writable by this user ({why}); nothing was changed",
            "run fidoctor as the user that owns it; fidoctor never uses sudo itself",
        )


def explain_os_error(e: OSError, what: str) -> StepError:
    """Turn an OSError from a step into a one-line message with a useful hint."""
    code = e.errno
    where = e.filename or ""
    msg = f"{what}: {where + ': ' if where else ''}{e.strerror or e}"
    if code in (errno.EACCES, errno.EPERM):
        return StepError(msg + " (permission denied or immutable)",
                         "run fidoctor as the owner of the file; check lsattr for the "
                         "immutable flag; fidoctor never uses sudo itself")
    if code == errno.EROFS:
        return StepError(msg + " (read-only file system)",
                         "remount it read-write or point FLASHINFER_WORKSPACE_BASE elsewhere")
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return StepError(msg + " (no space for the backup or the new file)",
                         "free some space (df -h) or set XDG_STATE_HOME to a disk with room")
    if code == errno.EXDEV:
        return StepError(msg + " (would cross file systems)",
                         "fidoctor only renames within one file system; it never copies "
                         "and deletes")
    return StepError(msg)


def manifest(path: str) -> Dict[str, Any]:
    """Every entry under ``path`` (not following symlinks): files with sha256 and size.

    Recorded before a directory is moved aside, so undo can prove it put back
    exactly the same bytes.
    """
    out: Dict[str, Any] = {}
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        return {".": _entry(path, st)}
    for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
        rel_dir = os.path.relpath(dirpath, path)
        for n in sorted(dirnames + filenames):
            p = os.path.join(dirpath, n)
            out[os.path.normpath(os.path.join(rel_dir, n))] = _entry(p, os.lstat(p))
    return out


def _entry(p: str, st: os.stat_result) -> Dict[str, Any]:
    if stat.S_ISLNK(st.st_mode):
        return {"kind": "symlink", "target": os.readlink(p)}
    if stat.S_ISDIR(st.st_mode):
        return {"kind": "dir"}
    if stat.S_ISREG(st.st_mode):
        if st.st_size > HASH_CAP:
            return {"kind": "file", "size": st.st_size, "fingerprint": big_fingerprint(p, st)}
        return {"kind": "file", "size": st.st_size, "sha256": sha256_file(p)}
    return {"kind": "special"}


def big_fingerprint(p: str, st: os.stat_result) -> str:
    """Size, mtime, inode and the first and last MiB of a file too big to hash in time.

    A rename keeps all of them, so undo can still tell "the same file came
    back"; a 1 TiB sparse file costs two reads, not minutes of hashing.
    """
    h = hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}".encode())
    fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        h.update(os.pread(fd, CHUNK, 0))
        h.update(os.pread(fd, CHUNK, max(0, st.st_size - CHUNK)))
    finally:
        os.close(fd)
    return h.hexdigest()


def fingerprint(path: str) -> str:
    """A cheap digest of names, types, sizes and mtimes under ``path``.

    Taken when the plan is made and again right before acting: if it differs,
    something changed the target in between and the step refuses.
    """
    h = hashlib.sha256()
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "absent"
    h.update(f".:{st.st_mode}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    if stat.S_ISDIR(st.st_mode):
        for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
            dirnames.sort()
            for n in sorted(dirnames + filenames):
                p = os.path.join(dirpath, n)
                try:
                    s = os.lstat(p)
                except OSError:
                    continue
                rel = os.path.relpath(p, path)
                h.update(f"{rel}:{s.st_mode}:{s.st_size}:{s.st_mtime_ns}\n".encode())
    return h.hexdigest()


def open_by(path: str) -> List[int]:
    """Pids with ``path`` open right now (by device and inode, from /proc/*/fd).

    Processes whose fds this user may not read are skipped; as root none are.
    """
    try:
        st = os.stat(path)
    except OSError:
        return []
    want = (st.st_dev, st.st_ino)
    me = os.getpid()
    out: List[int] = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        fd_dir = f"/proc/{name}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                s = os.stat(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if (s.st_dev, s.st_ino) == want:
                out.append(int(name))
                break
    return out
