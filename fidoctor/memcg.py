"""A process's memory cgroup, and the counters that tell a build that fits from one that thrashes.

Read-only, one definition for the ``oom`` gatherer (what the snapshot holds)
and the terminate step (which re-checks a thrashing build on the live cgroup
right before it signals anything).

Why these counters: a memory limit has two ways to end badly. The kernel
OOM-kills a compiler (``oom_kill`` climbs, build-killed), or, when the
compilers' own code pages (cicc, cudafe++, cc1plus text) are charged to the
cgroup, it reclaims those pages and the compilers fault them straight back
in, forever: usage sits at the limit, v1 ``memory.failcnt`` / v2
``memory.events`` ``max`` climb by tens of thousands a second, major faults
and ``workingset_refault_file`` climb, and ``oom_kill`` stays 0 (seen for
real: a 200 MB cgroup, cudafe++ at 193 MB anon, no progress for minutes).
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Optional, Tuple

from fidoctor.fsutil import read_head

UNLIMITED = 1 << 62
STAT_KEYS_V1 = {"total_rss": "anon", "total_cache": "file", "total_pgmajfault": "pgmajfault",
                "total_workingset_refault_file": "refault_file"}
STAT_KEYS_V2 = {"anon": "anon", "file": "file", "pgmajfault": "pgmajfault",
                "workingset_refault_file": "refault_file"}
# Charges that hit the limit per second above which the cgroup counts as thrashing (seen:
# 20,000–116,000/s with a build stuck at its limit; a build whose page cache is trimmed
# now and then stays far below).
THRASH_HITS_PER_S = 1000.0
AT_LIMIT = 0.95
# Counters whose growth over a window is the thrash signal (``sample``).
CLIMBING = ("failcnt", "max", "oom_kill", "pgmajfault", "refault_file")


def read_text(path: str) -> Optional[str]:
    raw = read_head(path, 1 << 16)
    return raw.decode("utf-8", "replace") if raw is not None else None


def kv(text: Optional[str]) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for line in (text or "").splitlines():
        k, _, v = line.partition(" ")
        if v.strip().lstrip("-").isdigit():
            out[k] = int(v)
    return out


def read_int(text: Optional[str]) -> Optional[int]:
    t = (text or "").strip()
    return int(t) if t.isdigit() else None  # "max" (v2, no limit): None


def paths_of(cgroup_text: str) -> Tuple[Optional[str], Optional[str]]:
    """(v1 memory path, v2 path) from the text of ``/proc/PID/cgroup``."""
    v1 = v2 = None
    for line in cgroup_text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2 = parts[2]
        elif "memory" in parts[1].split(","):
            v1 = parts[2]
    return v1, v2


def memcg_of(pid: int) -> Optional[str]:
    """The memory cgroup path of ``pid``: v1's ``memory`` line where there is one, else v2's.

    The same choice as the ``oom`` gatherer on a hybrid host (v2 mounted, memory on v1).
    """
    text = read_text(f"/proc/{pid}/cgroup")
    if text is None:
        return None
    v1, v2 = paths_of(text)
    return v1 if v1 is not None else v2


def cgroup_dir(mounts: List[Dict[str, Any]], version: int, path: str) -> Optional[str]:
    for m in mounts:
        if version == 2 and m["fstype"] != "cgroup2":
            continue
        if version == 1 and not (m["fstype"] == "cgroup" and "memory" in m["super_options"]):
            continue
        root = m["root"].rstrip("/")
        rel = path[len(root):] if root and path.startswith(root) else path
        d = m["mount_point"].rstrip("/") + rel
        if os.path.isdir(d):
            return d
    return None


def pressure(d: str) -> Optional[Dict[str, float]]:
    """v2 ``memory.pressure`` (PSI): share of time stalled on memory, some/full, 10 s average.

    None where the kernel keeps none (cgroup v1, or PSI disabled).
    """
    text = read_text(os.path.join(d, "memory.pressure"))
    if not text:
        return None
    out: Dict[str, float] = {}
    for line in text.splitlines():
        kind, *fields = line.split()
        for f in fields:
            k, _, v = f.partition("=")
            if k in ("avg10", "avg60") and kind in ("some", "full"):
                try:
                    out[f"{kind}_{k}"] = float(v)
                except ValueError:
                    pass
    return out or None


def counters(d: str, version: int) -> Dict[str, Any]:
    """One reading: usage, limit, the climbing counters (``CLIMBING``) and memory.stat's
    anon/file split (v1: hierarchical ``total_*``)."""
    out: Dict[str, Any] = {"t": time.monotonic()}
    if version == 2:
        ev = kv(read_text(os.path.join(d, "memory.events")))
        out["max"] = ev.get("max")
        out["oom_kill"] = ev.get("oom_kill")
        out["usage"] = read_int(read_text(os.path.join(d, "memory.current")))
        out["limit"] = read_int(read_text(os.path.join(d, "memory.max")))
        keys = STAT_KEYS_V2
    else:
        out["failcnt"] = read_int(read_text(os.path.join(d, "memory.failcnt")))
        out["oom_kill"] = kv(read_text(os.path.join(d, "memory.oom_control"))).get("oom_kill")
        out["usage"] = read_int(read_text(os.path.join(d, "memory.usage_in_bytes")))
        lim = read_int(read_text(os.path.join(d, "memory.limit_in_bytes")))
        out["limit"] = None if lim is None or lim >= UNLIMITED else lim
        keys = STAT_KEYS_V1
    st = kv(read_text(os.path.join(d, "memory.stat")))
    out["stat"] = {short: st[k] for k, short in keys.items() if k in st}
    for k in ("pgmajfault", "refault_file"):
        out[k] = out["stat"].get(k)
    return out


def delta(a: Dict[str, Any], b: Dict[str, Any]) -> Dict[str, Any]:
    """Growth of each climbing counter from reading ``a`` to ``b`` (None: not kept here)."""
    out: Dict[str, Any] = {"window_s": round(b["t"] - a["t"], 3), "usage_end": b.get("usage")}
    for k in CLIMBING:
        x, y = a.get(k), b.get(k)
        out[k] = (y - x) if isinstance(x, int) and isinstance(y, int) else None
    return out


def hit_rate(dd: Dict[str, Any], version: Optional[int]) -> float:
    """Times a second the limit was hit over a ``delta`` (v1 ``failcnt``, v2 ``max``)."""
    hits = dd.get("failcnt") if version == 1 else dd.get("max")
    return (hits or 0) / max(dd.get("window_s") or 0.0, 1e-3)


def thrashes(a: Dict[str, Any], b: Dict[str, Any], version: int) -> Tuple[bool, str]:
    """Between two ``counters`` readings: at its limit (``AT_LIMIT``), the limit hit
    ``THRASH_HITS_PER_S`` times a second, and no OOM kill; with a one-line account either way.
    The terminate step's re-check and the live watch's per-tick look (fidoctor.live.thrash)."""
    dd = delta(a, b)
    rate = hit_rate(dd, version)
    lim, use = b.get("limit"), b.get("usage")
    ok = bool(lim and use is not None and use >= AT_LIMIT * lim and rate >= THRASH_HITS_PER_S
              and not dd["oom_kill"])
    return ok, (f"usage {use} of limit {lim} bytes, {rate:.0f} limit hits/s, "
                f"oom_kill +{dd['oom_kill'] or 0} over {dd['window_s']:.1f} s")


def still_thrashing(d: str, version: int, window_s: float = 1.0) -> Tuple[bool, str]:
    """Re-check on the live cgroup over ``window_s`` (``thrashes``)."""
    a = counters(d, version)
    time.sleep(window_s)
    return thrashes(a, counters(d, version), version)
