"""Mounts, free space and the target's identity, as plain data for the filesystem probes.

Why here and not in a probe: reading ``/proc/PID/mountinfo``, ``statvfs`` and
``/proc/PID/status`` touches the machine (a dead network mount can block
``statvfs``), so the ``fs`` gatherer calls these under its budget and the
probes judge the result.

``mountinfo`` is read from the target's own ``/proc/PID/mountinfo`` with
``--pid`` (its mount namespace is the one that matters), else ours.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, TypedDict

from fidoctor.fsutil import read_head

NETWORK_FS = ("nfs", "nfs4", "lustre", "gpfs", "ceph", "cifs", "smb3", "smbfs", "9p",
              "beegfs", "glusterfs", "afs", "orangefs", "virtiofs")


class Mount(TypedDict, total=False):
    """One ``mountinfo`` line. Never renamed."""

    mount_id: int
    mount_point: str
    root: str          # the part of the source filesystem mounted here
    fstype: str        # e.g. ext4, tmpfs, nfs4, fuse.sshfs
    source: str
    options: List[str]        # per-mount options (ro/rw, nosuid, …)
    super_options: List[str]  # filesystem options (nolock, local_lock=all, …)
    ro: bool


class Identity(TypedDict, total=False):
    uid: int
    gid: int
    groups: List[int]
    source: str


def _unescape(s: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    out, i = "", 0
    while i < len(s):
        if s[i] == "\\" and s[i + 1:i + 4].isdigit() and len(s[i + 1:i + 4]) == 3:
            out += chr(int(s[i + 1:i + 4], 8))
            i += 4
        else:
            out += s[i]
            i += 1
    return out


def parse_mountinfo(text: str) -> List[Mount]:
    mounts: List[Mount] = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        a, b = left.split(), right.split()
        if len(a) < 6 or len(b) < 2:
            continue
        opts = a[5].split(",")
        sup = b[2].split(",") if len(b) > 2 else []
        mounts.append({"mount_id": int(a[0]), "root": _unescape(a[3]),
                       "mount_point": _unescape(a[4]), "options": opts,
                       "fstype": b[0], "source": _unescape(b[1]), "super_options": sup,
                       "ro": "ro" in opts or "ro" in sup})
    return mounts


def read_mountinfo(pid: Optional[int]) -> tuple:
    """(mounts, where they were read from); the target's namespace when we may read it."""
    for p in ([f"/proc/{pid}/mountinfo"] if pid else []) + ["/proc/self/mountinfo"]:
        raw = read_head(p, 8 << 20)
        if raw is not None:
            return parse_mountinfo(raw.decode("utf-8", "replace")), p
    return [], ""


def mount_of(path: str, mounts: List[Mount]) -> Optional[Mount]:
    """The mount that holds ``path`` (its realpath): the last, longest matching mount point."""
    real = os.path.realpath(path)
    best: Optional[Mount] = None
    for m in mounts:
        mp = m["mount_point"]
        inside = real == mp or real.startswith(mp.rstrip("/") + "/") or mp == "/"
        if inside and (best is None or len(mp) >= len(best["mount_point"])):
            best = m
    return best


# FUSE filesystems that are local (container overlays, images): not network storage.
LOCAL_FUSE = ("fuse.lxcfs", "fuse.portal", "fuse.gvfsd-fuse", "fuse.fuse-overlayfs",
              "fuse.squashfuse", "fuse.squashfuse_ll", "fuse.snapfuse", "fuse.bindfs")


KERNEL_FS = ("proc", "sysfs", "debugfs", "tracefs", "securityfs", "cgroup", "cgroup2", "pstore",
             "bpf", "configfs", "fusectl", "efivarfs")


def kernel_fs(path: str) -> Optional[str]:
    """The kernel pseudo file system ``path`` lies on (procfs, sysfs, …), or None: files there
    look regular but are interfaces (``/proc/kmsg``'s read blocks and takes the messages)."""
    m = mount_of(path, read_mountinfo(None)[0])
    return m["fstype"] if m and m.get("fstype") in KERNEL_FS else None


def is_network(fstype: str) -> bool:
    base = fstype.split(".", 1)[0]
    return base in NETWORK_FS or fstype.startswith("fuse.") and fstype not in LOCAL_FUSE


def statvfs(path: str) -> Dict[str, Any]:
    try:
        st = os.statvfs(path)
    except OSError as e:
        return {"error": e.strerror or str(e)}
    return {"bsize": st.f_frsize, "blocks": st.f_blocks, "bavail": st.f_bavail,
            "bfree": st.f_bfree, "files": st.f_files, "favail": st.f_favail,
            "avail_bytes": st.f_bavail * st.f_frsize, "total_bytes": st.f_blocks * st.f_frsize,
            "rdonly": bool(st.f_flag & os.ST_RDONLY), "fsid": st.f_fsid}


def identity(pid: Optional[int]) -> Identity:
    """The uid/gid/groups the target runs as: ``/proc/PID/status`` with --pid, else ours."""
    if pid:
        raw = read_head(f"/proc/{pid}/status", 1 << 16)
        if raw is not None:
            f: Dict[str, List[str]] = {}
            for line in raw.decode("utf-8", "replace").splitlines():
                k, _, v = line.partition(":")
                f[k] = v.split()
            try:
                return {"uid": int(f["Uid"][1]), "gid": int(f["Gid"][1]),  # effective ids
                        "groups": [int(g) for g in f.get("Groups", [])],
                        "source": f"/proc/{pid}/status"}
            except (KeyError, IndexError, ValueError):
                pass
    return {"uid": os.geteuid(), "gid": os.getegid(), "groups": list(os.getgroups()),
            "source": "fidoctor's own user (no --pid)"}


def owner_mode(path: str) -> Dict[str, Any]:
    """Owner and mode of what ``path`` names, following symlinks (as FlashInfer's writes do)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return {"path": path, "exists": False}
    except OSError as e:
        return {"path": path, "exists": False, "error": e.strerror or str(e)}
    from fidoctor.fsutil import file_kind

    kind = file_kind(st.st_mode)  # dir | file | fifo | socket | special
    out = {"path": path, "exists": True, "kind": kind, "uid": st.st_uid, "gid": st.st_gid,
           "mode": st.st_mode & 0o7777}
    if os.path.islink(path):
        out["symlink_to"] = os.path.realpath(path)
    return out


def nearest_existing(path: str) -> str:
    p = os.path.abspath(path)
    while not os.path.lexists(p) and p != "/":
        p = os.path.dirname(p)
    return p
