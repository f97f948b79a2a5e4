"""disk-space-low: too few free bytes or inodes where the next builds must write.

What: free bytes and inodes (``statvfs``, as the target's uid sees them:
``f_bavail``/``f_favail``) on the cache's filesystem and on the target's
``TMPDIR`` (where nvcc writes its ``tmpxft_*`` intermediates), against what
the pending builds need: every module without a loadable ``.so`` (or one cold
module when none is pending), sized per module kind, and one compile's
intermediates per parallel job (``MAX_JOBS``, else ninja's cores + 2).
Why: a full cache or TMPDIR fails the build half-way (``No space left on
device``, the assembler deleting the object it could not write, FlashInfer
#1467-style truncated ``.so``), and the half-built module then looks like the
problem. Error when not even the pending builds fit; warning when they fit
with less than twice their need (or 256 MiB) to spare.
Fix: free space (old FlashInfer versions' workspaces are listed), or point
``TMPDIR`` at a filesystem with room. Moving module dirs aside frees nothing,
so those fixes are held back until there is room.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterable, List, Tuple

from fidoctor.flashinfer.eta import jobs_for, kind_of
from fidoctor.model import Finding, Fix
from fidoctor.probes._facts import iter_modules, quote, so_problem
from fidoctor.probes._fsfacts import gib, mount, places
from fidoctor.snapshot import Snapshot
from fidoctor.snapshot.types import ModuleFacts

ID = "disk-space-low"
REQUIRES = ("fs", "cache")
CAUSE = True
# Bytes and files of one built module dir, measured on the real H100 cache
# (tests/fixtures/real-h100/tree.txt, FlashInfer 0.7.2.post1, sm_90a, hd128).
MODULE_SIZE: Dict[str, Tuple[int, int]] = {
    "decode": (3_283_659, 7), "prefill-fa2": (8_803_776, 14), "prefill-fa3": (6_582_742, 14),
}
DEFAULT_SIZE = (8_803_776, 14)  # other kinds: the largest measured
# nvcc's intermediates for one translation unit (.ii, .cudafe1.cpp, .ptx, .cubin, .fatbin):
# 23,526,005 B measured here (nvcc 13.0, single decode hd64, --keep); CUTLASS-heavy
# kinds are assumed twice that.
TMP_PER_JOB = {"decode": 24 << 20, "single-decode": 24 << 20}
TMP_PER_JOB_DEFAULT = 48 << 20
FLOOR = 256 << 20
EXTRA_INODES = 6  # the dir, build.ninja, .ninja_log/.ninja_deps, the lock, the generated dir


def _size(kind: str) -> Tuple[int, int]:
    return MODULE_SIZE.get(kind.replace("single-", ""), DEFAULT_SIZE)


def _pending(snap: Snapshot) -> List[ModuleFacts]:
    return [m for _, m in iter_modules(snap) if not m.get("error") and so_problem(m)]


def check(snap: Snapshot) -> Iterable[Finding]:
    fs = snap.data("fs")
    pending = _pending(snap)
    kinds = [kind_of(m["name"]) for m in pending] or ["prefill-fa2"]
    cache_bytes = sum(_size(k)[0] for k in kinds)
    cache_inodes = sum(_size(k)[1] + EXTRA_INODES for k in kinds)
    cores = snap.data("host").get("cpu_count") or os.cpu_count() or 1
    jobs = jobs_for(snap.context.get("env") or {}, cores)
    tmp_bytes = max(TMP_PER_JOB.get(k, TMP_PER_JOB_DEFAULT) for k in kinds) * jobs
    what = (f"{len(pending)} pending build(s)" if pending else "one cold module build")
    needs: Dict[str, Dict[str, Any]] = {}
    for role, nbytes, ninodes in (("root", cache_bytes, cache_inodes), ("tmpdir", tmp_bytes, 2 * jobs)):
        pl = next(iter(places(snap, role)), None)
        m = mount(fs, pl) if pl else None
        if not pl or not m:
            continue
        n = needs.setdefault(str(pl["mount_id"]), {"mount": m, "bytes": 0, "inodes": 0,
                                                   "roles": []})
        n["bytes"] += nbytes
        n["inodes"] += ninodes
        n["roles"].append((role, pl["path"]))
    for n in needs.values():
        m = n["mount"]
        sv = m.get("statvfs") or {}
        if "avail_bytes" not in sv:
            continue
        avail, favail = sv["avail_bytes"], sv.get("favail")
        files = sv.get("files") or 0
        short_b = avail < n["bytes"]
        short_i = files > 0 and favail is not None and favail < n["inodes"]
        low_b = avail < max(2 * n["bytes"], FLOOR)
        low_i = files > 0 and favail is not None and favail < 2 * n["inodes"] + 1000
        if not (short_b or short_i or low_b or low_i):
            continue
        error = short_b or short_i
        where = " and ".join(("the cache " if r == "root" else "TMPDIR ") + p for r, p in n["roles"])
        evidence = [f"{where}: on {m['mount_point']} ({m['fstype']}), statvfs: "
                    f"{gib(avail)} free of {gib(sv.get('total_bytes'))}, "
                    f"{favail} of {files} inodes free",
                    f"{what} need about {gib(n['bytes'])} and {n['inodes']} inodes here "
                    f"(module sizes measured per kind; {jobs} parallel job(s) × nvcc "
                    "intermediates in TMPDIR)"]
        fixes = _fixes(snap, n["roles"], avail, n["bytes"])
        yield Finding(
            id=ID, severity="error" if error else "warning", subject=m["mount_point"],
            title=(f"{m['mount_point']} is too full for the next builds ("
                   f"{gib(avail)} free, {gib(n['bytes'])} needed)" if short_b else
                   f"{m['mount_point']} has too few free inodes ({favail}) for the next builds"
                   if short_i else f"{m['mount_point']} is nearly full ({gib(avail)} free)"),
            evidence=evidence, fixes=fixes,
            data={"affects": ["*"] if error else [], "mount_point": m["mount_point"],
                  "avail_bytes": avail, "avail_inodes": favail, "need_bytes": n["bytes"],
                  "need_inodes": n["inodes"], "roles": [r for r, _ in n["roles"]],
                  "pending": len(pending), "jobs": jobs})


def _fixes(snap: Snapshot, roles, avail: int, need: int) -> List[Fix]:
    out: List[Fix] = []
    target = (snap.data("target").get("packages", {}).get("flashinfer-python") or {}).get("version")
    root = snap.data("cache").get("root", "")
    if any(r == "root" for r, _ in roles):
        # only with the target's version known: else its own workspace may be among them
        old = sorted({os.path.join(root, ws["version"]) for ws in snap.data("cache").get(
            "workspaces", []) if ws.get("version") and ws["version"] != target}) if target else []
        if old:
            out.append(Fix(
                description="Remove the caches of FlashInfer versions the target no longer uses "
                f"(the target has {target})",
                commands=[f"rm -rf {quote(d)}" for d in old], safety="caution"))
        out.append(Fix(description=f"Free at least {gib(need - avail + (64 << 20))} on this "
                       "filesystem, or move the cache to one with room (FLASHINFER_WORKSPACE_BASE)",
                       commands=["df -h " + quote(root), "du -sh " + quote(root) + "/*"],
                       safety="caution"))
    if any(r == "tmpdir" for r, _ in roles):
        fs = snap.data("fs")
        roomy = [pl for pl in places(snap, "candidate")
                 if ((mount(fs, pl) or {}).get("statvfs") or {}).get("avail_bytes", 0) > 4 * need
                 and not (mount(fs, pl) or {}).get("network")]
        cmd = (f"export TMPDIR={quote(os.path.dirname(roomy[0]['path']))}" if roomy
               else "export TMPDIR=/path/with/room")
        out.append(Fix(description="Point the server's TMPDIR (where nvcc writes its "
                       "intermediates) at a filesystem with room", commands=[cmd],
                       safety="caution"))
    return out
