"""cache-unreadable: parts of the FlashInfer cache could not be read.

What: a workspace's ``cached_ops`` (or a module dir in it) gave permission
denied, a symlink loop or another error while fidoctor scanned it.
Why: the findings about those modules are blind; and if the server runs as
this user, FlashInfer itself cannot use that cache (FlashInfer#2834, #2976:
``PermissionError: [Errno 13]`` in non-root containers).
Fix: run fidoctor as the server's user, or give that user the cache back
(``chown -R``), or point ``FLASHINFER_WORKSPACE_BASE`` at a writable disk.
"""

from __future__ import annotations

import errno
import os
from typing import Iterable

from fidoctor.model import Finding, Fix
from fidoctor.probes._facts import quote, workspaces
from fidoctor.snapshot import Snapshot

ID = "cache-unreadable"
REQUIRES = ("cache",)


def check(snap: Snapshot) -> Iterable[Finding]:
    cache = snap.data("cache")
    problems = []
    why = cache.get("root_error")
    if cache.get("root_kind") == "denied" or cache.get("root_kind") == "error" and \
            why != os.strerror(errno.ENOTDIR):  # a file/FIFO above it: cache-not-writable's
        problems.append(f"{cache.get('root')}: {cache.get('root_kind')}"
                        + (f" ({why})" if why else ""))
    for ws in workspaces(snap):
        problems.extend(ws.get("errors", []))
        problems.extend(f"{m['path']}: {m['error']}" for m in ws.get("modules", [])
                        if m.get("error"))
    if not problems:
        return
    uid = snap.data("host").get("uid")
    yield Finding(
        id=ID,
        severity="warning",
        title=f"{len(problems)} part(s) of the FlashInfer cache could not be read",
        subject=str(cache.get("root")),
        evidence=problems[:20] + ([f"… and {len(problems) - 20} more"] if len(problems) > 20 else [])
        + ([f"fidoctor ran as uid {uid}"] if uid is not None else []),
        fixes=[Fix(description="Inspect as the server's user, or give that user its cache back",
                   commands=["sudo -u <server user> fidoctor diagnose",
                             f"sudo chown -R <server user> {quote(str(cache.get('root')))}",
                             "export FLASHINFER_WORKSPACE_BASE=/path/on/writable/disk"],
                   safety="caution")],
        data={"errors": problems},
    )
