"""fidoctor's own processes, which the gatherers must never judge.

What: the set of pids that are fidoctor itself: the CLI process, the fidoctor
processes above it (``fidoctor run`` above its ``snapshot``), the process that
gathers a snapshot and its forked gatherers, and everything those started (the
target interpreter a gatherer asks, the warmup child and its ninja/nvcc) except
the server ``fidoctor run`` started for the user.
Why: a gatherer's sibling is a Python process whose environment points at the
cache (it was started with the target's), asleep in a poll loop: exactly what a
filelock waiter looks like. Counted, it made "2 process(es) wait" out of one and
"1 process spins" on a box where nothing waited (issue 18).
Fix: ``own_pids(table)`` once per gatherer; holders, waiters and builders skip it.
"""

from __future__ import annotations

import os
from typing import Dict, Optional, Set, Tuple

from fidoctor.procfs import read_proc

_cli_root: Optional[int] = None
_runner: Optional[int] = None
_foreign: Set[int] = set()


def claim_cli() -> None:
    """Called once by the CLI's entry: this process and all it starts are fidoctor."""
    global _cli_root
    _cli_root = os.getpid()


def note_runner() -> None:
    """Called by gather_snapshot before it forks the gatherers."""
    global _runner
    _runner = os.getpid()


def foreign(pid: int) -> None:
    """A child fidoctor started for the user (``fidoctor run``'s server): not ours."""
    _foreign.add(pid)


def _cmdline(pid: int) -> bytes:
    return read_proc(pid, "cmdline", 8192) or b""


def _is_fidoctor(cmd: bytes) -> bool:
    argv = cmd.split(b"\0")
    if b"-m" in argv and b"fidoctor" in argv:
        return True
    return any(os.path.basename(a) == b"fidoctor" for a in argv[:2])


def own_pids(table: Dict[int, Tuple[str, int, int]]) -> Set[int]:
    """fidoctor's own pids in ``table`` ({pid: (comm, ppid, pgid)}, proctree.scan_table)."""
    me = os.getpid()
    kids: Dict[int, list] = {}
    for pid, row in table.items():
        kids.setdefault(row[1], []).append(pid)
    roots: Set[int] = {me}
    if _runner is not None:
        roots.add(_runner)
        cmd = _cmdline(_runner)
        # The forked gatherers: the runner's children with its own command line.
        roots.update(c for c in kids.get(_runner, []) if cmd and _cmdline(c) == cmd)
    own: Set[int] = set(roots)
    todo = list(roots - {_runner}) if _runner is not None else list(roots)
    if _cli_root is not None:
        own.add(_cli_root)
        todo.append(_cli_root)
        # The fidoctor processes above it (``fidoctor run`` above its snapshot), not
        # their other children (the server).
        up, seen = table.get(_cli_root, ("", 0, 0))[1], 0
        while up > 1 and seen < 16 and _is_fidoctor(_cmdline(up)):
            own.add(up)
            up, seen = table.get(up, ("", 0, 0))[1], seen + 1
    while todo:
        pid = todo.pop()
        for c in kids.get(pid, []):
            if c in own or c in _foreign:
                continue
            own.add(c)
            todo.append(c)
    return own
