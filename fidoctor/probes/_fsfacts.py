"""Shared views over the ``fs`` section: may the target write here, on what mount, with what room.

Pure functions of snapshot data (permission bits as the kernel checks them for
a uid/gid/groups, without ACLs or capabilities other than root's override).
"""

from __future__ import annotations

import stat
from typing import Any, Dict, List, Optional

from fidoctor.snapshot import Snapshot

R, W, X = 4, 2, 1


def may(ident: Dict[str, Any], st: Dict[str, Any], want: int) -> bool:
    """Whether ``ident`` has the ``want`` bits (R|W|X) on a file with ``st``'s owner and mode."""
    if ident.get("uid") == 0:
        return True  # CAP_DAC_OVERRIDE; a read-only mount is checked apart
    mode = int(st.get("mode", 0))
    if st.get("uid") == ident.get("uid"):
        bits = (mode >> 6) & 7
    elif st.get("gid") == ident.get("gid") or st.get("gid") in (ident.get("groups") or []):
        bits = (mode >> 3) & 7
    else:
        bits = mode & 7
    return bits & want == want


def fmt_owner(st: Dict[str, Any]) -> str:
    kind = "d" if st.get("kind") == "dir" else "-"
    return f"owner {st.get('uid')}:{st.get('gid')} mode {kind}{stat.filemode(st.get('mode', 0))[1:]}" \
        f" ({oct(st.get('mode', 0))[2:]})"


def who(ident: Dict[str, Any]) -> str:
    return f"uid {ident.get('uid')} gid {ident.get('gid')} (from {ident.get('source')})"


def mount(fs: Dict[str, Any], place: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    return fs.get("mounts", {}).get(str(place.get("mount_id")))


def ro_reason(m: Optional[Dict[str, Any]], src: str) -> Optional[str]:
    if not m:
        return None
    sv = m.get("statvfs") or {}
    if m.get("ro") or sv.get("rdonly"):
        how = "ro in its options" if m.get("ro") else "statvfs reports ST_RDONLY"
        return (f"{m['mount_point']} ({m['fstype']} from {m.get('source')}) is mounted read-only "
                f"({how}: {','.join(m.get('options', []))}; {src})")
    return None


_KIND_WORDS = {"file": "a regular file", "fifo": "a FIFO (named pipe)", "socket": "a socket",
               "special": "a device node", "other": "not a directory"}
NOT_A_DIR = ", not a directory"  # marks a blocked path in a problem text (no chown fixes it)


def _not_dir(path: str, kind: Optional[str]) -> str:
    return f"{path} is {_KIND_WORDS.get(str(kind), f'a {kind}')}{NOT_A_DIR}"


def write_problem(fs: Dict[str, Any], place: Dict[str, Any]) -> Optional[str]:
    """Why the target cannot create or write ``place`` (None: it can)."""
    ident = fs.get("identity", {})
    ro = ro_reason(mount(fs, place), fs.get("mountinfo", "mountinfo"))
    if ro:
        return ro
    for anc in place.get("ancestors", []):
        if anc.get("exists") and anc.get("kind") == "dir" and not may(ident, anc, X):
            return f"{anc['path']}: {fmt_owner(anc)}: uid {ident.get('uid')} cannot enter it"
    if place.get("exists") and place.get("role") not in ("log", "tmpdir", "candidate") \
            and place.get("kind") not in ("dir", None):
        return _not_dir(place["path"], place.get("kind"))  # FlashInfer's mkdir: File exists
    if place.get("exists"):
        need = W | X if place.get("kind") == "dir" else W
        if not may(ident, place, need):
            what = "create files in it" if place.get("kind") == "dir" else "write it"
            return f"{place['path']}: {fmt_owner(place)}: uid {ident.get('uid')} cannot {what}"
        return None
    near = place.get("nearest") or {}
    if near.get("exists") and near.get("kind") == "dir" and not may(ident, near, W | X):
        return (f"{place['path']} does not exist and its nearest existing parent {near['path']} "
                f"({fmt_owner(near)}) does not let uid {ident.get('uid')} create it")
    if near.get("exists") and near.get("kind") not in ("dir", None):
        return _not_dir(near["path"], near.get("kind"))  # mkdir below it: Not a directory
    return None


def places(snap: Snapshot, *roles: str) -> List[Dict[str, Any]]:
    return [p for p in snap.data("fs").get("places", []) if not roles or p.get("role") in roles]


def gib(n: Optional[float]) -> str:
    if n is None:
        return "?"
    if n >= 1 << 30:
        return f"{n / (1 << 30):.1f} GiB"
    return f"{n / (1 << 20):.0f} MiB"


def local_base(snap: Snapshot, need_bytes: int = 1 << 30) -> Optional[Dict[str, Any]]:
    """A node-local dir the target may write, with room: where a fix can move the workspace."""
    fs = snap.data("fs")
    for pl in places(snap, "candidate"):
        m = mount(fs, pl)
        if not m or m.get("network") or write_problem(fs, pl):
            continue
        avail = (m.get("statvfs") or {}).get("avail_bytes")
        if avail is None or avail < need_bytes:
            continue
        return {"path": pl["path"], "fstype": m["fstype"], "mount_point": m["mount_point"],
                "avail_bytes": avail}
    return None


def lock_semantics(fstype: str, opts: List[str]) -> str:
    """What ``flock`` means on this mount, from its type and options."""
    o = set(opts)
    kv: Dict[str, str] = dict(x.split("=", 1) for x in opts if "=" in x)
    base = fstype.split(".", 1)[0]
    if base in ("nfs", "nfs4"):
        if "nolock" in o:
            return "nolock: locks are local to this node; other nodes do not see them"
        if kv.get("local_lock") in ("all", "flock"):
            return f"local_lock={kv['local_lock']}: flock is local to this node"
        return ("flock is emulated with NFS byte-range locks (lockd/NFSv4): shared between "
                "nodes, but lost or stuck when a client dies without releasing them")
    if base == "lustre":
        if "localflock" in o:
            return "localflock: flock is local to this node; other nodes do not see it"
        if "flock" in o:
            return "flock: cluster-coherent locks (slow under contention)"
        return "no flock option: flock fails (ENOSYS) and filelock raises NotImplementedError"
    if base in ("cifs", "smb3"):
        return ("nobrl: byte-range locks are local only" if "nobrl" in o else
                "locks go to the SMB server; flock is emulated and not coherent with POSIX locks")
    if base == "9p":
        return "9p: locks are local to this guest/node unless the server implements them"
    if fstype.startswith("fuse."):
        return (f"{fstype}: FUSE does not forward flock unless the filesystem implements it "
                "(sshfs does not): a lock taken here does not exclude another node")
    if base in ("gpfs", "ceph", "beegfs", "glusterfs"):
        return f"{base}: cluster-coherent locks, but slow; output mtimes may disagree with .ninja_log"
    return "lock behaviour across nodes unknown"
