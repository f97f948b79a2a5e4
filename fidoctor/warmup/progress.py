"""Progress for people: one line per module state, a live bar on a TTY.

Plain mode (not a TTY, or --json where progress goes to stderr): lines
``[2/6] decode:bf16:128 compiling 30 s, CPU 195%, RSS 1.1 GiB`` every
``PLAIN_EVERY`` seconds, and one line when a module ends. TTY mode rewrites
one status line with a bar instead of printing ticks.
"""

from __future__ import annotations

import sys
import time
from typing import Any, List, Optional, TextIO, Tuple

from fidoctor.warmup.result import ModuleResult
from fidoctor.warmup.runner import Progress

PLAIN_EVERY = 15.0


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def end_line(m: ModuleResult, i: int, n: int) -> str:
    head = f"[{i + 1}/{n}] {m.key}"
    if m.status == "done":
        return f"{head} done in {m.seconds:.0f} s (MAX_JOBS={m.max_jobs}, peak RSS {_gib(m.peak_rss)})"
    if m.status == "cached":
        note = f"; {m.info['note']}" if m.info.get("note") else ""
        return f"{head} cached (checked in {m.seconds:.1f} s){note}"
    if m.status == "failed":
        return f"{head} failed after {m.seconds:.0f} s: {m.error}"
    if m.status in ("stalled", "timed_out") and m.verdict is not None:
        return f"{head} {m.status.replace('_', ' ')} after {m.seconds:.0f} s: {m.verdict.title}"
    return f"{head} {m.status}"


class LineProgress(Progress):
    def __init__(self, stream: Optional[TextIO] = None, tty: Optional[bool] = None) -> None:
        self.out = stream or sys.stderr
        self.tty = self.out.isatty() if tty is None else tty
        self._last_tick = 0.0
        self._n = 0
        self._i = 0
        self._live = False
        self._parallel = False
        self._last_all = 0.0
        self._in_flight: Tuple[str, ...] = ()

    def _print(self, text: str) -> None:
        if self._live:
            self.out.write("\r\x1b[K")
            self._live = False
        self.out.write(text + "\n")
        self.out.flush()

    def note(self, text: str) -> None:
        self._print(f"  {text}")

    def queued(self, mods: List[ModuleResult]) -> None:
        self._n = len(mods)
        for i, m in enumerate(mods):
            self._print(f"[{i + 1}/{len(mods)}] {m.key} queued")

    def start(self, m: ModuleResult, i: int, n: int) -> None:
        self._i, self._last_tick = i, 0.0
        if m.info.get("compiled"):
            return  # a cached module is said once, when ninja has confirmed it ("cached")
        self._print(f"[{i + 1}/{n}] {m.key} compiling ({m.name or 'name pending'})")

    def inflight(self, mods: List[Tuple[ModuleResult, int, int]]) -> None:
        """Every module in flight on one line: ``key edges-started/edges``."""
        if not mods:
            return
        self._parallel = True
        text = "compiling: " + " · ".join(f"{m.key} {k}/{n} steps" for m, k, n in mods)
        now = time.monotonic()
        keys = tuple(m.key for m, _, _ in mods)
        if self.tty:
            self.out.write(f"\r\x1b[K{text[:200]}")
            self.out.flush()
            self._live = True
        elif now - self._last_all >= PLAIN_EVERY or keys != self._in_flight:
            self._last_all = now
            self._print(text)
        self._in_flight = keys

    def tick(self, m: ModuleResult, elapsed: float, sample: Any) -> None:
        if self._parallel:
            return  # inflight() shows every module at once
        text = (f"[{self._i + 1}/{self._n}] {m.key} compiling {elapsed:.0f} s, "
                f"CPU {sample.cpu_fraction * 100:.0f}%, RSS {_gib(sample.rss)}, "
                f"{sample.procs} procs")
        if self.tty:
            done = int(20 * self._i / max(self._n, 1))
            bar = "#" * done + ">" + "." * (19 - done)
            self.out.write(f"\r\x1b[K[{bar}] {text}")
            self.out.flush()
            self._live = True
        elif elapsed - self._last_tick >= PLAIN_EVERY:
            self._last_tick = elapsed
            self._print(text)

    def end(self, m: ModuleResult, i: int, n: int) -> None:
        self._print(end_line(m, i, n))
        if m.quarantined:
            self._print(f"    moved aside: {m.quarantined}")
