"""Bounded readers of ``/proc/PID/*`` that never raise: the one parser of each format.

Why one place: the NUL-separated ``cmdline`` and ``environ`` formats were
parsed in five modules, each with its own cap and its own idea of an empty
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
