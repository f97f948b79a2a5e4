"""cache-not-writable: the target cannot create its lock files, module dirs or JIT log.

What: for the uid the server runs as (``/proc/PID/status`` with ``--pid``,
else the user running fidoctor), the cache root, each workspace, its
``cached_ops/``, ``cached_ops/tmp/`` (lock files), ``flashinfer_jit.log`` and
each module dir still to be built is checked against the mount (read-only in
``mountinfo`` or ``statvfs``), then owner and mode bits along the path.
Why: FlashInfer 0.7 opens ``flashinfer_jit.log`` at import, so a read-only
cache fails the import (``[Errno 30] Read-only file system``); a foreign-owned
one fails with ``PermissionError: [Errno 13]`` (FlashInfer#2976, vLLM#28440),
or leaves half-built modules that every restart retries.
Fix: point ``FLASHINFER_WORKSPACE_BASE`` at a node-local dir the server's user
may write (env file; the new cache starts cold), or give the cache back to
that user (``chown``), or remount it read-write. Moving module dirs aside
cannot work here, so those fixes are held back until this one is fixed.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterable, List

from fidoctor.model import Finding, Fix
from fidoctor.probes._facts import env_fix, quote
from fidoctor.probes._fsfacts import (
    NOT_A_DIR,
    gib,
    local_base,
    mount,
    places,
    ro_reason,
    who,
    write_problem,
)
from fidoctor.snapshot import Snapshot

ID = "cache-not-writable"
REQUIRES = ("fs", "cache")
CAUSE = True
ROLES = ("root", "workspace", "cached_ops", "locks", "log", "module")


def check(snap: Snapshot) -> Iterable[Finding]:
    fs = snap.data("fs")
    ident = fs.get("identity", {})
    root = snap.data("cache").get("root") or snap.context.get("flashinfer_root", "")
    problems: List[Dict[str, Any]] = []
    seen = set()
    for pl in places(snap, *ROLES):
        why = write_problem(fs, pl)
        if why is None or why in seen:
            continue
        seen.add(why)
        problems.append({"role": pl["role"], "path": pl["path"], "why": why,
                         "ro": bool(ro_reason(mount(fs, pl), "")),
                         "not_dir": why.endswith(NOT_A_DIR)})
    if not problems:
        return
    affects: List[str] = []
    for p in problems:
        if p["role"] == "module":
            affects.append(os.path.basename(p["path"]))
        elif p["role"] in ("root",):
            affects = ["*"]
            break
        else:
            ws = p["path"]
            while os.path.basename(ws) in ("cached_ops", "tmp", "flashinfer_jit.log"):
                ws = os.path.dirname(ws)
            affects.append(ws)
    affects = list(dict.fromkeys(affects))
    ro = any(p["ro"] for p in problems)
    evidence = [f"the target runs as {who(ident)}"] + [p["why"] for p in problems[:8]]
    if len(problems) > 8:
        evidence.append(f"… and {len(problems) - 8} more")
    fixes: List[Fix] = []
    base = local_base(snap)
    if base:
        fixes.append(env_fix(
            "use-local-workspace", ID, "FLASHINFER_WORKSPACE_BASE", base["path"],
            f"Point FLASHINFER_WORKSPACE_BASE at {base['path']} (uid "
            f"{ident.get('uid')} may create it; local {base['fstype']}, {gib(base['avail_bytes'])} "
            "free): the next start builds a fresh cache there (cold: minutes of compiling)"))
    blocked = all(p["not_dir"] for p in problems)
    if blocked:  # a file, FIFO or device where a directory must be: no chown or remount helps
        fixes.append(Fix(description=f"Move aside what stands where the cache must be: "
                         f"{problems[0]['why']} (FlashInfer cannot create its directories there)",
                         safety="caution"))
    elif not ro:
        target = problems[0]["path"] if problems[0]["role"] != "root" else root
        fixes.append(Fix(
            description="Give the cache back to the user the server runs as",
            commands=[f"chown -R {ident.get('uid')}:{ident.get('gid')} {quote(target)}"],
            safety="caution"))
    else:
        mp = next((mount(fs, pl) or {}).get("mount_point") for pl in places(snap, *ROLES)
                  if pl["path"] == problems[0]["path"])
        fixes.append(Fix(
            description="If this mount is meant to be writable, remount it read-write (it "
            "may be read-only on purpose, e.g. a shared image)",
            commands=[f"mount -o remount,rw {quote(str(mp))}"], safety="risky"))
    yield Finding(
        id=ID, severity="error", subject=root,
        title=("the FlashInfer cache is on a read-only mount: builds and the JIT log fail"
               if ro else f"the FlashInfer cache cannot be created: {problems[0]['why']}"
               if blocked else f"uid {ident.get('uid')} cannot write the FlashInfer cache: builds "
               "fail with Permission denied"),
        evidence=evidence, fixes=fixes,
        data={"affects": affects, "uid": ident.get("uid"), "read_only": ro,
              "places": problems, "workspace_base": base["path"] if base else None})
