"""cache-on-network-fs: the FlashInfer cache lives on a network or FUSE filesystem.

What: the mount holding the cache root (from the target's ``mountinfo``) is
nfs, lustre, gpfs, ceph, cifs, 9p, beegfs, … or any ``fuse.*`` (sshfs, s3fs,
gcsfuse); the lock semantics its options imply are spelled out.
Why: FlashInfer serialises builds with ``fcntl.flock`` on
``cached_ops/tmp/<module>.lock``. On NFS with ``nolock``/``local_lock=all``,
Lustre with ``localflock``, CIFS with ``nobrl``, 9p and FUSE filesystems that
do not forward locks (sshfs), that lock is only node-local: ranks on two nodes
build the same module into one dir at once (``Stale file handle`` at link,
half-written ``.so``). Lustre without ``flock`` fails the lock outright
(filelock raises NotImplementedError). Output mtimes on GPFS/NFS can disagree
with ``.ninja_log`` and rebuild everything on every start (FlashInfer
PR#3579); a maintainer suspects NFS in lock hangs (PR#993).
Fix: a node-local ``FLASHINFER_WORKSPACE_BASE`` (env file): safe, the cost is
one cold build per node.
"""

from __future__ import annotations

from typing import Iterable, List

from fidoctor.model import Finding, Fix
from fidoctor.probes._facts import env_fix
from fidoctor.probes._fsfacts import gib, local_base, lock_semantics, mount, places
from fidoctor.snapshot import Snapshot

ID = "cache-on-network-fs"
REQUIRES = ("fs",)


def check(snap: Snapshot) -> Iterable[Finding]:
    fs = snap.data("fs")
    root = next(iter(places(snap, "root")), None)
    if root is None:
        return
    m = mount(fs, root)
    if not m or not m.get("network"):
        return
    opts = list(dict.fromkeys(m.get("options", []) + m.get("super_options", [])))
    locks = lock_semantics(m["fstype"], opts)
    base = local_base(snap)
    fixes: List[Fix] = []
    if base:
        fixes.append(env_fix(
            "use-local-workspace", ID, "FLASHINFER_WORKSPACE_BASE", base["path"],
            f"Keep the cache on node-local disk: FLASHINFER_WORKSPACE_BASE="
            f"{base['path']} ({base['fstype']}, {gib(base['avail_bytes'])} free); each node "
            "builds its own cache once"))
    else:
        fixes.append(Fix(
            description="Keep the cache on node-local disk (no local dir with room was found "
            "here: pick one)", commands=["export FLASHINFER_WORKSPACE_BASE=/local/disk/fi"],
            safety="safe"))
    yield Finding(
        id=ID, severity="warning", subject=root["path"],
        title=f"the FlashInfer cache is on a network filesystem ({m['fstype']}): build locks "
        "and mtimes are unreliable across nodes",
        evidence=[f"{root['path']} is on {m['mount_point']} ({m['fstype']} from "
                  f"{m.get('source')}, options {','.join(opts)}; {fs.get('mountinfo')})",
                  f"lock semantics: {locks}"],
        fixes=fixes,
        data={"fstype": m["fstype"], "mount_point": m["mount_point"], "source": m.get("source"),
              "options": opts, "locks": locks,
              "workspace_base": base["path"] if base else None})
