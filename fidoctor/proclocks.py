"""``/proc/locks``: who holds a file lock, read one way for the gatherers and warmup.

Lines look like ``1: FLOCK  ADVISORY  WRITE 5171 fe:00:2686989 0 EOF``; a
waiter blocked in the kernel has ``->`` after the number. The device is
``MAJOR:MINOR`` in hex while ``st_dev`` is one integer, so they are compared
through ``os.major``/``os.minor``. overlayfs and some FUSE file systems print
another device than ``stat()`` returns: when no entry matches device and
inode, entries matching the inode alone are taken (``match`` says which).
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Tuple


def parse_proc_locks(text: str) -> List[Dict[str, Any]]:
    """``/proc/locks`` lines as dicts: kind, mode, pid, major, minor, ino, blocked."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 6:
            continue
        blocked = parts[1] == "->"
        if blocked:
            parts = parts[:1] + parts[2:]
        try:
            kind, mode, pid, devino = parts[1], parts[3], int(parts[4]), parts[5]
            maj, mnr, ino = devino.split(":")
            out.append({"kind": kind, "mode": mode, "pid": pid, "major": int(maj, 16),
                        "minor": int(mnr, 16), "ino": int(ino), "blocked": blocked})
        except (ValueError, IndexError):
            continue
    return out


def read_proc_locks() -> Tuple[List[Dict[str, Any]], Optional[str]]:
    """(entries, error): error is None when ``/proc/locks`` was read."""
    try:
        with open("/proc/locks") as f:
            return parse_proc_locks(f.read()), None
    except OSError as e:
        return [], e.strerror or str(e)


def entries_for(entries: List[Dict[str, Any]], dev: Optional[int], ino: Optional[int]
                ) -> Tuple[List[Dict[str, Any]], Optional[str]]:
    """The entries on one file, and how they matched ("dev+inode", "inode" or None)."""
    same = [e for e in entries if e["ino"] == ino]
    exact = [e for e in same if dev is not None
             and (e["major"], e["minor"]) == (os.major(dev), os.minor(dev))]
    if exact:
        return exact, "dev+inode"
    return same, ("inode" if same else None)


def lock_holders(path: str, entries: Optional[List[Dict[str, Any]]] = None) -> List[int]:
    """Pids holding (not waiting for) a lock on ``path``; [] if it is absent or unheld."""
    try:
        st = os.stat(path)
    except OSError:
        return []
    if entries is None:
        entries, _ = read_proc_locks()
    hits, _ = entries_for(entries, st.st_dev, st.st_ino)
    return sorted({e["pid"] for e in hits if not e["blocked"]})
