"""cache-not-writable in server output: FlashInfer cannot write its workspace.

What: ``OSError: [Errno 30] Read-only file system: '/…/.cache/flashinfer/…/flashinfer_jit.log'``
(FlashInfer 0.7 creates its workspace at import: the error may name ``<base>/.cache``,
then the traceback's FlashInfer frames tie it to the JIT), ``PermissionError: [Errno 13] Permission
denied: '/…/flashinfer…'`` (FlashInfer#2976, non-root containers), the linker's
``cannot open output file …/cached_ops/…so: Read-only file system``. The errno
number is read, so localized texts (``只读文件系统``, ``Keine Berechtigung``) count.
Why: a read-only image layer or volume, a HOME owned by another user, a cache
created by root and used by a service account.
Fix: a writable ``FLASHINFER_WORKSPACE_BASE`` for the server's user.
"""

from __future__ import annotations

import re
from typing import Dict, List

from fidoctor.model import Fix
from fidoctor.serverlog.matchers import confirm

ID = "cache-not-writable"
SEVERITY = "error"
ANCHOR = "self"
TRIGGERS = ("[errno 30]", "[errno 13]", "read-only file system", "permission denied")
PATTERNS = [
    re.compile(r"\[Errno (?P<errno>30|13)\] [^:']*: '(?P<path>[^']+)'"),
    re.compile(r"cannot open output file (?P<path>\S+): (?P<reason>Read-only file system|"
               r"Permission denied)"),
    re.compile(r"(?P<path>/\S*(?:flashinfer|cached_ops)\S*): (?P<reason>Read-only file system|"
               r"Permission denied)"),
    re.compile(r"(?P<reason>Permission denied|Read-only file system): '(?P<path>[^']+)'"),
]
# A path that is not the JIT's own (FlashInfer 0.7 creates <base>/.cache first, so the error
# names '<base>/.cache') counts when the same traceback runs through FlashInfer's JIT.
CONFIRM = (re.compile(r"flashinfer/jit/|FLASHINFER_WORKSPACE|cached_ops|flashinfer_jit\.log"), 25)


def title(d: Dict[str, str]) -> str:
    why = {"30": "a read-only file system", "13": "permission denied"}.get(
        d.get("errno", ""), (d.get("reason") or "not writable").lower())
    return f"FlashInfer cannot write {d.get('path', 'its workspace')}: {why}"


def fixes(d: Dict[str, str]) -> List[Fix]:
    return [Fix("Give the server a writable, node-local workspace for its own user",
                ["export FLASHINFER_WORKSPACE_BASE=/var/tmp/flashinfer-$USER   # writable, local",
                 confirm()], safety="safe")]
