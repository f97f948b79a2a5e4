"""The changes a fix can make, each one reversible from what the journal records.

A step is plain data (it is written to the journal before it runs) plus four
verbs: ``preflight`` (refuse early: symlinks, permissions, "changed since the
plan"), ``apply``, ``state`` (look at the disk: was it applied? — what crash
recovery relies on, since the journal cannot know whether a killed process got
past the rename) and ``revert``.

* ``move-aside`` renames a file or directory into the quarantine on the same
  file system (one atomic rename; never a copy, never a delete).
* ``put-file`` writes a file through a same-directory temp file, fsync and
  ``os.replace``, after copying the old bytes (if any) into the journal's
  backups; revert restores them the same way.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, List, Optional, Tuple

from fidoctor.fsutil import fsync_dir, write_fsynced
from fidoctor.textsafe import shown
from fidoctor.txn.safety import (
    StepError,
    check_parent_inside,
    check_writable_dir,
    explain_os_error,
    fingerprint,
    manifest,
    open_by,
    open_dir_below,
    rename_at,
    root_id,
    sha256_file,
    sha256_or_none,
)

BEFORE, AFTER, UNKNOWN = "before", "after", "unknown"


class TxContext:
    """What a step needs from its transaction: the id and the journal's dirs."""

    def __init__(self, txid: str, backups: str, removed: str, n: int = 0) -> None:
        self.txid, self.backups, self.removed, self.n = txid, backups, removed, n


def rename_state(src: str, dst: str) -> str:
    """Where a one-rename step stands, asked of the disk: only ``dst`` there is AFTER,
    only ``src`` is BEFORE, both or neither is UNKNOWN (recovery never guesses)."""
    s, d = os.path.lexists(src), os.path.lexists(dst)
    if d and not s:
        return AFTER
    if s and not d:
        return BEFORE
    return UNKNOWN


def missing_dirs(path: str) -> Tuple[List[str], str]:
    """(the missing ancestors of ``path``, top first, which apply creates and revert removes
    again if empty; the nearest one that exists)."""
    missing: List[str] = []
    d = os.path.dirname(path)
    while not os.path.lexists(d):
        missing.insert(0, d)
        d = os.path.dirname(d)
    return missing, d


def remove_created(dirs: List[str]) -> None:
    """Remove the dirs a step made (listed top first), deepest first; stop at one not empty."""
    for d in reversed(dirs):
        try:
            os.rmdir(d)  # only ever removes an empty dir fidoctor made
        except OSError:
            break


@dataclass
class MoveAside:
    """Rename ``src`` to ``dst`` (in the quarantine, same file system)."""

    src: str
    dst: str
    root: str
    fp: str = ""
    manifest: Dict[str, Any] = field(default_factory=dict)
    created: List[str] = field(default_factory=list)
    require_closed: bool = False  # refuse while any process has it open (a live lock)
    root_id: List[int] = field(default_factory=list)  # (dev, inode) of root when applied
    kind: str = "move-aside"
    revertible: bool = True

    def describe(self) -> str:
        return shown(f"move {self.src} aside to {self.dst}")

    def preflight(self, tx: Optional[TxContext] = None) -> None:
        check_parent_inside(self.src, self.root)
        if not os.path.lexists(self.src):
            raise StepError(f"{self.src} is gone since the plan was made; re-run fidoctor fix")
        if self.fp and fingerprint(self.src) != self.fp:
            raise StepError(f"{self.src} changed since the plan was made (a build may be "
                            "writing to it); nothing was moved", "re-run fidoctor fix")
        if os.path.lexists(self.dst):
            raise StepError(f"{self.dst} already exists; fidoctor will not overwrite it")
        check_writable_dir(os.path.dirname(self.src), "to move the entry out of it")
        self._check_closed()
        self.created, d = missing_dirs(self.dst)  # the quarantine's
        check_parent_inside(d + "/x", self.root)
        check_writable_dir(d, "to create the quarantine")
        if os.stat(d).st_dev != os.lstat(os.path.dirname(self.src)).st_dev:
            raise StepError(f"quarantine {d} is on another file system than {self.src}",
                            "fidoctor only renames; it never copies and deletes")
        try:
            self.manifest = manifest(self.src)
            self.root_id = root_id(self.root)
        except OSError as e:
            raise explain_os_error(e, "cannot read what is to be moved") from None

    def _check_closed(self) -> None:
        if self.require_closed:
            pids = open_by(self.src)
            if pids:
                raise StepError(f"{self.src} is open by pid {', '.join(map(str, pids))} "
                                "(a live holder); fidoctor leaves it alone")

    def apply(self, tx: TxContext) -> Dict[str, Any]:
        self._check_closed()  # again, immediately before the rename
        self._rename(self.src, self.dst, create=True)
        return {}

    def _rename(self, src: str, dst: str, create: bool) -> None:
        """Rename relative to descriptors walked down from the root with O_NOFOLLOW.

        A path string is checked once and used later; a descriptor is the
        directory itself. A symlink swapped in for ``cached_ops`` (or any dir
        between the root and the entry) makes the walk fail, so nothing outside
        the root can be moved in or out; an existing ``dst`` is never replaced.
        """
        sfd = dfd = -1
        try:
            if self.root_id and root_id(self.root) != list(self.root_id):
                raise StepError(f"{self.root} is not the directory it was when the fix ran "
                                "(replaced or remounted); nothing was moved",
                                "look at it, then move the entry back by hand if you must")
            sfd = open_dir_below(self.root, os.path.dirname(src))
            dfd = open_dir_below(self.root, os.path.dirname(dst), create=create)
            rename_at(sfd, os.path.basename(src), dfd, os.path.basename(dst))
            for fd in (sfd, dfd):
                try:
                    os.fsync(fd)
                except OSError:
                    pass
        except OSError as e:
            raise explain_os_error(e, f"cannot move {src} to {dst}") from None
        finally:
            for fd in (sfd, dfd):
                if fd >= 0:
                    os.close(fd)

    def state(self) -> str:
        return rename_state(self.src, self.dst)

    def explain_unknown(self) -> str:
        if os.path.lexists(self.src):
            return (f"{self.src} exists again (rebuilt since the fix?) and the moved copy is "
                    f"still at {self.dst}; left both as they are")
        return f"neither {self.src} nor {self.dst} exists; nothing to move back"

    def revert(self, tx: TxContext) -> List[str]:
        warnings: List[str] = []
        check_parent_inside(self.src, self.root)  # containment again, at undo time
        check_parent_inside(self.dst, self.root)
        self._rename(self.dst, self.src, create=False)
        self.cleanup()
        try:
            now = manifest(self.src)
        except OSError:
            now = {}
        if self.manifest and now != self.manifest:
            diff = sorted(k for k in set(now) | set(self.manifest)
                          if now.get(k) != self.manifest.get(k))[:3]
            warnings.append(f"{self.src} restored, but differs from what was moved: "
                            + ", ".join(diff))
        return warnings

    def cleanup(self) -> None:
        remove_created(self.created)


@dataclass
class PutFile:
    """Write ``path`` (new bytes from ``content`` or ``source``), keeping the old ones."""

    path: str
    root: str
    new_sha: str
    old_sha: Optional[str] = None  # None: the file did not exist when planned
    content: Optional[str] = None
    source: Optional[str] = None
    backup: str = ""
    mode: Optional[int] = None
    mtime_ns: Optional[int] = None
    root_id: List[int] = field(default_factory=list)  # (dev, inode) of root when planned
    kind: str = "put-file"
    revertible: bool = True

    def describe(self) -> str:
        what = f"copy {self.source} over" if self.source else (
            "write" if self.old_sha is None else "rewrite")
        keep = " (old bytes backed up; sha256 " + self.old_sha[:12] + "…)" if self.old_sha else ""
        return shown(f"{what} {self.path}{keep}")

    def _tmp(self, tx: TxContext) -> str:
        return os.path.join(os.path.dirname(self.path),
                            f".{os.path.basename(self.path)}.fidoctor-{tx.txid}.tmp")

    def preflight(self, tx: Optional[TxContext] = None) -> None:
        check_parent_inside(self.path, self.root)
        parent = os.path.dirname(self.path)
        if self.old_sha is None:
            if os.path.lexists(self.path):
                raise StepError(f"{self.path} appeared since the plan was made; re-run "
                                "fidoctor fix")
        else:
            st = os.lstat(self.path)
            if stat.S_ISLNK(st.st_mode):
                raise StepError(f"{self.path} is a symlink; fidoctor will not replace a file "
                                "through a symlink")
            if sha256_or_none(self.path) != self.old_sha:
                raise StepError(f"{self.path} changed since the plan was made; nothing was "
                                "replaced", "re-run fidoctor fix")
            self.mode = stat.S_IMODE(st.st_mode)
            self.mtime_ns = st.st_mtime_ns
        if self.source and sha256_or_none(self.source) != self.new_sha:
            raise StepError(f"{self.source} changed since the plan was made", "re-run fidoctor fix")
        if not os.path.isdir(parent) and self.old_sha is None:
            os.makedirs(parent, 0o700, exist_ok=True)
        check_writable_dir(parent, "to replace a file in it")
        if tx is not None and self.old_sha is not None:
            self.backup = os.path.join(tx.backups, f"{tx.n:02d}-{os.path.basename(self.path)}")
        self.root_id = root_id(self.root)

    def _new_bytes(self) -> bytes:
        if self.content is not None:
            return self.content.encode()
        with open(self.source or "", "rb") as f:
            return f.read()

    def apply(self, tx: TxContext) -> Dict[str, Any]:
        name, tmpn = os.path.basename(self.path), os.path.basename(self._tmp(tx))
        dfd = self._parent_fd()
        try:
            if self.old_sha is not None:
                os.makedirs(tx.backups, 0o700, exist_ok=True)
                data, st = _read_at(dfd, name)
                _write_at(None, self.backup + ".partial", data, stat.S_IMODE(st.st_mode))
                os.utime(self.backup + ".partial", ns=(st.st_atime_ns, st.st_mtime_ns))
                os.replace(self.backup + ".partial", self.backup)
                fsync_dir(os.path.dirname(self.backup))
                if sha256_file(self.backup) != self.old_sha:
                    raise StepError(f"backup {self.backup} does not match {self.path}")
            _write_at(dfd, tmpn, self._new_bytes(),
                      self.mode if self.mode is not None else 0o644)
            os.replace(tmpn, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            os.fsync(dfd)
        except OSError as e:
            _unlink_at(dfd, tmpn)
            _unlink_quietly(self.backup + ".partial")
            raise explain_os_error(e, f"cannot replace {self.path}") from None
        except BaseException:
            _unlink_at(dfd, tmpn)
            _unlink_quietly(self.backup + ".partial")
            raise
        finally:
            os.close(dfd)
        return {"backup": self.backup}

    def _parent_fd(self) -> int:
        """The file's directory, walked from the root with O_NOFOLLOW (see MoveAside); the
        root itself must still be the directory it was when the step was planned."""
        try:
            if self.root_id and root_id(self.root) != list(self.root_id):
                raise StepError(f"{self.root} is not the directory it was when the fix was "
                                "planned (replaced, or a symlink put there); nothing was "
                                "written", "look at it, then re-run fidoctor")
        except OSError as e:
            raise explain_os_error(e, f"cannot reach {self.root}") from None
        return open_dir_below(self.root, os.path.dirname(os.path.normpath(self.path)))

    def state(self) -> str:
        cur = sha256_or_none(self.path)
        if cur == self.new_sha:
            return AFTER
        if (self.old_sha is None and not os.path.lexists(self.path)) or cur == self.old_sha:
            return BEFORE
        return UNKNOWN

    def explain_unknown(self) -> str:
        return (f"{self.path} changed since the fix (sha256 {sha256_or_none(self.path)}); "
                f"left as it is" + (f"; the original is in {self.backup}" if self.backup else ""))

    def revert(self, tx: TxContext) -> List[str]:
        _unlink_quietly(self._tmp(tx))  # fidoctor's own partial write, if a crash left one
        if self.old_sha is None:
            os.makedirs(tx.removed, 0o700, exist_ok=True)
            dest = os.path.join(tx.removed, f"{tx.n:02d}-{os.path.basename(self.path)}")
            try:
                os.replace(self.path, dest)
            except OSError as e:  # another file system: keep a copy, then remove ours
                try:
                    _copy_durably(self.path, dest)
                    os.unlink(self.path)
                except OSError:
                    raise explain_os_error(e, f"cannot take back {self.path}") from None
            fsync_dir(os.path.dirname(self.path))
            return []
        data = self._verified_backup()
        check_parent_inside(self.path, self.root)  # containment again, at undo time
        name, tmpn = os.path.basename(self.path), os.path.basename(self._tmp(tx))
        dfd = self._parent_fd()
        try:
            _write_at(dfd, tmpn, data, self.mode if self.mode is not None else 0o644,
                      self.mtime_ns)
            os.replace(tmpn, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            os.fsync(dfd)
        except OSError as e:
            _unlink_at(dfd, tmpn)
            raise explain_os_error(e, f"cannot restore {self.path}") from None
        finally:
            os.close(dfd)
        if sha256_or_none(self.path) != self.old_sha:
            return [f"{self.path} restored but its sha256 differs from the original"]
        return []

    def _verified_backup(self) -> bytes:
        """The backup's bytes, only if their sha256 is the original's; else StepError.

        Checked *before* anything is replaced: a corrupted or truncated backup
        must never overwrite the current (working) file.
        """
        from fidoctor.safeio import UnsafeFile, read_bytes

        try:
            data = read_bytes(self.backup, BACKUP_CAP, follow=False, what="backup")
        except UnsafeFile as e:
            raise StepError(f"{e.message}; {self.path} left as it is") from None
        got = hashlib.sha256(data).hexdigest()
        if got != self.old_sha:
            raise StepError(f"backup {self.backup} is damaged (sha256 {got[:12]}…, the original "
                            f"was {str(self.old_sha)[:12]}…); {self.path} left as it is",
                            "restore the file by hand (e.g. pip install --force-reinstall)")
        return data

    def cleanup(self) -> None:
        pass


BACKUP_CAP = 4 << 30


def _read_at(dfd: int, name: str) -> Tuple[bytes, os.stat_result]:
    """A regular file's bytes and stat, opened relative to ``dfd`` without following links."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StepError(f"{name}: not a regular file; fidoctor will not replace it")
        parts: List[bytes] = []
        while True:
            b = os.read(fd, 1 << 20)
            if not b:
                return b"".join(parts), st
            parts.append(b)
    finally:
        os.close(fd)


def _write_at(dfd: Optional[int], name: str, data: bytes, mode: int,
              mtime_ns: Optional[int] = None) -> None:
    """Create ``name`` (in the dir open as ``dfd``; None: a plain path) and write it durably."""
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600, dir_fd=dfd)
    try:
        write_fsynced(fd, data, mode, mtime_ns)
    finally:
        os.close(fd)


def _unlink_at(dfd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dfd)
    except OSError:
        pass


def _copy_durably(src: str, dst: str) -> None:
    """Copy bytes, mode and mtime of ``src`` to ``dst`` via a temp name, fsynced."""
    st = os.stat(src)
    tmp = dst + ".partial"
    _unlink_quietly(tmp)
    try:
        with open(src, "rb") as f:
            _write_at(None, tmp, f.read(), stat.S_IMODE(st.st_mode))
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(tmp, dst)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    fsync_dir(os.path.dirname(dst))


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def quarantine_step(module_dir: str, txid: str, workspace: Optional[str] = None,
                    check_unchanged: bool = True) -> MoveAside:
    """The step that moves one module dir to ``<workspace>/fidoctor-quarantine/<txid>/``.

    The one way fixes and warmup take a module aside. ``check_unchanged``
    records a fingerprint, so the move is refused if a build wrote to the dir
    between plan and apply (off when the caller just ended that build).
    """
    from fidoctor.paths import quarantine_dir

    src = os.path.normpath(module_dir)
    ws = workspace or os.path.dirname(os.path.dirname(src))
    dst = os.path.join(quarantine_dir(src, txid), os.path.basename(src))
    return MoveAside(src=src, dst=dst, root=ws, fp=fingerprint(src) if check_unchanged else "")


KINDS: Dict[str, Any] = {"move-aside": MoveAside, "put-file": PutFile}


def register_kind(cls: Any) -> Any:
    """Let a step kind defined elsewhere (process termination) be read back from a journal."""
    KINDS[cls.kind if isinstance(cls.kind, str) else cls.__name__] = cls
    return cls


def to_dict(step: Any) -> Dict[str, Any]:
    return asdict(step)


def from_dict(d: Dict[str, Any], warnings: Optional[List[str]] = None) -> Any:
    """A step from its journal form; fields this fidoctor does not know are skipped.

    A newer fidoctor may add fields: they are dropped with a warning (when
    ``warnings`` is given). An unknown kind or a missing/ill-typed field is a
    ``StepError`` naming it, never a crash.
    """
    kind = d.get("kind")
    if kind not in KINDS:
        raise StepError(f"journal names an unknown step kind {kind!r}",
                        "this journal was written by a newer fidoctor; undo with that version")
    cls = KINDS[kind]
    known = {f.name: f for f in fields(cls)}
    extra = sorted(k for k in d if k not in known)
    if extra and warnings is not None:
        warnings.append(f"{kind} step: ignored field(s) {', '.join(map(str, extra))} "
                        "(written by a newer fidoctor?)")
    try:
        step = cls(**{k: v for k, v in d.items() if k in known})
    except TypeError as e:
        raise StepError(f"journal step {kind!r} is incomplete: {e}") from None
    for f in fields(step):
        want = _TYPES.get(f.name)
        if want and not isinstance(getattr(step, f.name), want):
            raise StepError(f"journal step {kind!r}: field {f.name} has the wrong type")
    return step


_TYPES: Dict[str, Any] = {"src": str, "dst": str, "root": str, "path": str,
                          "manifest": dict, "created": list, "pids": list}
