"""``move-in``: put a prepared file or directory in place with one rename; undo takes it out.

What ``fidoctor cache import`` installs: the module dirs (and generated
sources) are first written, checked and rewritten in a staging dir on the same
file system (``<workspace>/fidoctor-import/<txid>/``); this step renames each
one into ``cached_ops/`` or ``generated/``. Nothing already there is ever
replaced (a module being replaced is moved aside first by a ``move-aside``
step). ``revert`` renames it back into the staging dir and deletes that copy
only when it is byte for byte what was installed (the manifest recorded at
preflight): anything a later build wrote into it is left in the staging dir
and named, never deleted.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from fidoctor.fsutil import fsync_dir
from fidoctor.txn.safety import (
    StepError,
    check_parent_inside,
    check_writable_dir,
    explain_os_error,
    manifest,
    open_dir_below,
    rename_at,
)
from fidoctor.txn.steps import (
    AFTER,
    UNKNOWN,
    TxContext,
    missing_dirs,
    register_kind,
    remove_created,
    rename_state,
)


@dataclass
class MoveIn:
    src: str                 # the prepared copy, in the staging dir
    dst: str                 # where it goes
    root: str                # the workspace: both paths must stay inside it
    manifest: Dict[str, Any] = field(default_factory=dict)
    created: List[str] = field(default_factory=list)
    kind: str = "move-in"
    revertible: bool = True

    def describe(self) -> str:
        return f"install {self.dst}"

    def preflight(self, tx: Optional[TxContext] = None) -> None:
        check_parent_inside(self.src, self.root)
        check_parent_inside(self.dst, self.root)
        if not os.path.lexists(self.src):
            raise StepError(f"{self.src}: the prepared copy is gone")
        if os.path.lexists(self.dst):
            raise StepError(f"{self.dst} already exists; fidoctor will not overwrite it",
                            "pass --replace to move the existing one aside (undoable)")
        self.created, d = missing_dirs(self.dst)
        check_writable_dir(d, "to install into it")
        if os.stat(d).st_dev != os.lstat(self.src).st_dev:
            raise StepError(f"{self.src} and {d} are on different file systems",
                            "fidoctor only renames; it never copies and deletes")
        try:
            self.manifest = manifest(self.src)
        except OSError as e:
            raise explain_os_error(e, "cannot read what is to be installed") from None

    def apply(self, tx: TxContext) -> Dict[str, Any]:
        try:
            for d in self.created:
                os.mkdir(d, 0o755)
            _rename_below(self.root, self.src, self.dst)
        except OSError as e:
            raise explain_os_error(e, f"cannot install {self.dst}") from None
        fsync_dir(os.path.dirname(self.dst))
        return {}

    def state(self) -> str:
        st = rename_state(self.src, self.dst)
        if st == AFTER and self.manifest and not self._as_installed(self.dst):
            return UNKNOWN  # rebuilt or changed since: not ours to take out any more
        return st

    def _as_installed(self, path: str) -> bool:
        try:
            return manifest(path) == self.manifest
        except (OSError, StepError):
            return False

    def explain_unknown(self) -> str:
        if os.path.lexists(self.dst) and os.path.lexists(self.src):
            return f"{self.dst} and the staged copy {self.src} both exist; left both"
        if os.path.lexists(self.dst):
            return (f"{self.dst} changed since it was installed (rebuilt or edited); left it in "
                    "place: fidoctor never takes out what it did not put there")
        return f"neither {self.dst} nor {self.src} exists; nothing to take out"

    def revert(self, tx: TxContext) -> List[str]:
        if self.manifest and not self._as_installed(self.dst):
            raise StepError(f"{self.dst} changed since it was installed; left it in place")
        try:
            os.close(open_dir_below(self.root, os.path.dirname(self.src), create=True))
            _rename_below(self.root, self.dst, self.src)
        except OSError as e:
            raise explain_os_error(e, f"cannot take {self.dst} out") from None
        fsync_dir(os.path.dirname(self.dst))
        try:
            now = manifest(self.src)
        except OSError:
            now = {}
        if now != self.manifest:
            # Changed between the check and the rename: put it back where it was, never
            # leave it in the staging dir (which is removed with the import).
            try:
                _rename_below(self.root, self.src, self.dst)
            except OSError:
                return [f"{self.dst} changed after it was installed; kept it at {self.src}"]
            raise StepError(f"{self.dst} changed since it was installed; left it in place")
        if os.path.isdir(self.src) and not os.path.islink(self.src):
            shutil.rmtree(self.src)
        else:
            os.unlink(self.src)
        self.cleanup()
        _rmdir_up(os.path.dirname(self.src), self.root)
        return []

    def cleanup(self) -> None:
        remove_created(self.created)


@dataclass
class Staging:
    """The import's own staging dir: step 0, so a rollback or undo removes what is left in
    it (copies from the bundle that were never moved in) after the ``move-in`` steps."""

    path: str                # <workspace>/fidoctor-import/<txid>
    root: str
    kind: str = "staging"
    revertible: bool = True

    def describe(self) -> str:
        return f"unpack into {self.path} (removed when undone)"

    def preflight(self, tx: Optional[TxContext] = None) -> None:
        check_parent_inside(self.path, self.root)
        if os.path.basename(os.path.dirname(self.path)) != "fidoctor-import":
            raise StepError(f"{self.path} is not a fidoctor-import staging dir")

    def apply(self, tx: TxContext) -> Dict[str, Any]:
        return {}

    def state(self) -> str:
        return AFTER  # reverting is removing whatever is still staged, if anything

    def explain_unknown(self) -> str:
        return ""

    def revert(self, tx: TxContext) -> List[str]:
        self.preflight()
        if os.path.isdir(self.path) and not os.path.islink(self.path):
            shutil.rmtree(self.path)
        _rmdir_up(os.path.dirname(self.path), self.root)
        return []

    def cleanup(self) -> None:
        pass


def _rename_below(root: str, src: str, dst: str) -> None:
    """One ``renameat2(RENAME_NOREPLACE)`` between directories walked down from ``root`` with
    O_NOFOLLOW: a symlink swapped in for ``cached_ops`` (or the staging dir) since the plan
    makes it fail instead of moving anything outside the workspace, and an entry that appeared
    at ``dst`` (even an empty dir, which a plain rename would replace) is never replaced."""
    sfd = open_dir_below(root, os.path.dirname(os.path.normpath(src)))
    try:
        dfd = open_dir_below(root, os.path.dirname(os.path.normpath(dst)))
        try:
            rename_at(sfd, os.path.basename(src), dfd, os.path.basename(dst))
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)


def _rmdir_up(d: str, root: str) -> None:
    """Remove empty staging dirs up to (not including) ``root``."""
    root = os.path.normpath(root)
    while os.path.normpath(d) != root and d.startswith(root + os.sep):
        try:
            os.rmdir(d)
        except OSError:
            return
        d = os.path.dirname(d)


register_kind(MoveIn)
register_kind(Staging)
