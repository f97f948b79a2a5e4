"""Bounded readers of ``/proc/PID/*`` that never raise: the one parser of each format.

Why one place: the NUL-separated ``cmdline`` and ``environ`` formats (and the
``maps`` lines) were parsed in five modules, each with its own cap and its own idea of an empty
argument. A process can vanish or belong to someone else between listing and
reading; every reader here returns ``None`` for that, and the caller decides
what an unreadable process means.
"""

from __future__ import annotations

from typing import Dict, List, Optional


def read_proc(pid: int, name: str, cap: int = 1 << 20) -> Optional[bytes]:
    """The first ``cap`` bytes (-1: all) of ``/proc/PID/<name>``; None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read(cap)
    except OSError:
        return None


def parse_argv(raw: bytes) -> List[str]:
    """``/proc/PID/cmdline`` bytes as argv (empty arguments dropped)."""
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]


def parse_environ(raw: bytes) -> Dict[str, str]:
    """``/proc/PID/environ`` bytes as a dict (entries without ``=`` dropped)."""
    env: Dict[str, str] = {}
    for item in raw.split(b"\0"):
        k, sep, v = item.partition(b"=")
        if sep:
            env[k.decode("utf-8", "replace")] = v.decode("utf-8", "replace")
    return env


def mapped_files(maps: str, deleted: bool = True) -> List[str]:
    """Distinct paths of ``/proc/PID/maps`` text, by address (pseudo-paths like ``[vdso]``
    too). A file deleted since it was mapped loses its `` (deleted)`` suffix, or is left
    out with ``deleted=False``."""
    seen: Dict[str, None] = {}
    for line in maps.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 6:
            continue  # anonymous
        path = parts[5].strip()
        if path.endswith(" (deleted)"):
            if not deleted:
                continue
            path = path[: -len(" (deleted)")]
        seen.setdefault(path)
    return list(seen)
