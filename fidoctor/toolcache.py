"""Answers of slow-to-ask tools (nvcc, the host compiler), cached per tool and budgeted.

``nvcc --help``, ``nvcc --list-gpu-arch``, ``nvcc --dryrun -gencode=…`` and
``gcc -dM -E`` give the same answer for as long as the executable is the same
file, so the parsed answer is kept on disk (``$XDG_CACHE_HOME/fidoctor/
tool-facts-v1.json``) keyed by the executable's real path, size, mtime and
inode. A warm diagnose runs no tool at all. A cold one runs each under its own
timeout and a shared budget: a query the budget cannot afford is recorded as
skipped, never waited for. A corrupt cache file is ignored, never fatal; it is
replaced atomically (``jsoncache``, through ``safeio.write_atomic``).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

from fidoctor import proc
from fidoctor.jsoncache import load_entries, save_entries
from fidoctor.paths import cache_dir

FACTS_VERSION = 1
MAX_ENTRIES = 2000


def tool_key(path: str) -> Optional[List[Any]]:
    """(realpath, size, mtime_ns, inode) of an executable, or None when it cannot be stat'ed."""
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        return None
    return [real, st.st_size, st.st_mtime_ns, st.st_ino]


class ToolCache:
    """Parsed tool answers on disk, with a wall-clock budget for the ones not cached."""

    def __init__(self, budget_s: float, path: Optional[str] = None) -> None:
        self.path = path or os.path.join(cache_dir(), f"tool-facts-v{FACTS_VERSION}.json")
        self.deadline = time.monotonic() + budget_s
        self.dirty = False
        self.ran: List[str] = []
        self.hits = 0
        self.skipped: List[str] = []
        self.entries, self.load_error = load_entries(self.path, FACTS_VERSION, "tool cache")

    def left_s(self) -> float:
        return self.deadline - time.monotonic()

    def ask(self, exe: str, args: Sequence[str], parse: Callable[[proc.RunResult], Any],
            timeout: float, env: Optional[Dict[str, str]] = None,
            cwd: Optional[str] = None) -> Dict[str, Any]:
        """``parse(run(exe + args))`` from the cache, or run now within the budget.

        Returns ``{"value": …, "cached": bool}``, or ``{"error": why}`` when
        the tool cannot be stat'ed, could not run, timed out or the budget is
        spent. Timeouts and budget skips are not cached (the next run retries).
        """
        key = tool_key(exe)
        if key is None:
            return {"error": f"{exe}: cannot stat"}
        ck = json.dumps([key, list(args)])
        ent = self.entries.get(ck)
        if isinstance(ent, dict) and "value" in ent:
            self.hits += 1
            return {"value": ent["value"], "cached": True}
        left = self.left_s()
        if left < 0.2:
            what = " ".join([os.path.basename(exe), *args])[:120]
            self.skipped.append(what)
            return {"error": f"not run: fidoctor's budget for tool queries was spent ({what})"}
        r = proc.run([exe, *args], timeout=min(timeout, left), env=env, cwd=cwd)
        self.ran.append(" ".join([os.path.basename(exe), *args])[:120])
        if r.timed_out or r.error:
            return {"error": r.describe()}
        value = parse(r)
        self.entries[ck] = {"value": value}
        self.dirty = True
        return {"value": value, "cached": False}

    def summary(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"path": self.path, "hits": self.hits, "ran": self.ran,
                               "skipped": self.skipped}
        if self.load_error:
            out["load_error"] = self.load_error
        return out

    def save(self) -> Optional[str]:
        """Write the cache if it changed; an error string instead of raising."""
        if not self.dirty:
            return None
        if len(self.entries) > MAX_ENTRIES:
            self.entries = dict(list(self.entries.items())[-MAX_ENTRIES:])
        err = save_entries(self.path, FACTS_VERSION, self.entries, "tool cache")
        if err:
            return err
        self.dirty = False
        return None
