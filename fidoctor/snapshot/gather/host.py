"""Host facts: kernel, cores, memory, and the filesystem the FlashInfer cache is on."""

from __future__ import annotations

import os
import platform
import socket
import sys
from typing import Any, Dict

import psutil

NAME = "host"
BUDGET_S = 3.0
ORDER = 0


def _fs_type(path: str) -> Dict[str, Any]:
    """Mount point and type of the filesystem holding ``path`` (nearest existing parent)."""
    p = os.path.abspath(path)
    while not os.path.exists(p) and p != "/":
        p = os.path.dirname(p)
    best: Dict[str, Any] = {"mountpoint": "/", "fstype": "?", "opts": ""}
    try:
        for part in psutil.disk_partitions(all=True):
            mp = part.mountpoint
            if (p == mp or p.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best["mountpoint"]):
                best = {"mountpoint": mp, "fstype": part.fstype, "opts": part.opts}
    except OSError:
        pass
    try:
        du = psutil.disk_usage(p)
        best["free_bytes"] = du.free
    except OSError:
        pass
    return best


def gather(ctx, done) -> Dict[str, Any]:
    vm = psutil.virtual_memory()
    return {
        "hostname": socket.gethostname(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "mem_total": vm.total,
        "mem_available": vm.available,
        "fidoctor_python": sys.version.split()[0],
        "cache_fs": _fs_type(ctx.flashinfer_root),
        "uid": os.getuid(),
    }
