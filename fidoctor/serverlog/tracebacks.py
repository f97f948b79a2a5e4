"""Where a line sits in a chain of Python tracebacks, per stream.

Why: in ``During handling of the above exception, another exception occurred:``
and ``The above exception was the direct cause of the following exception:``
chains, the *first* exception is the cause and the later ones are
consequences (vLLM's ``Engine core initialization failed``, a generic
``RuntimeError`` re-raised by a wrapper). The verdict needs to know which
exception of which chain a matching line belongs to.

States: idle → ``Traceback (most recent call last):`` → frames (indented lines)
→ the exception line and its message (FlashInfer's ``RuntimeError: Ninja build
failed. Ninja output:`` carries the whole ninja output, unindented) → a chain
separator (same chain, next exception) or a new ``Traceback`` (a new chain).
py-spy dumps and faulthandler output are frames too (indented).
"""

from __future__ import annotations

from typing import Optional, Tuple

SEPARATORS = ("During handling of the above exception", "The above exception was the direct cause")
MAX_MESSAGE_LINES = 4000


class ChainTracker:
    __slots__ = ("state", "chain", "exc", "after_sep", "message_lines", "ts")

    def __init__(self) -> None:
        self.state = "idle"
        self.chain = 0
        self.exc = 0
        self.after_sep = False
        self.message_lines = 0
        self.ts: Optional[float] = None

    def blank(self) -> None:
        """A blank line: ends nothing by itself (chains print blank lines around separators)."""

    def step(self, text: str, ts: Optional[float] = None) -> Optional[Tuple[int, int]]:
        """Advance with one line; return (chain, exception) if the line is inside one.
        ``ts``: the line's log time, when its prefix had one: a message ends at the first
        line logged later than the exception (a logger repeats its time on every line)."""
        if text.startswith("Traceback (most recent call last)"):
            self.ts = ts
            if self.after_sep:
                self.exc += 1
            else:
                self.chain += 1
                self.exc = 0
            self.after_sep = False
            self.state = "frames"
            return (self.chain, self.exc)
        if self.state == "idle":
            return None
        if text.startswith(SEPARATORS):
            self.after_sep = True
            self.state = "sep"
            return (self.chain, self.exc)
        if self.state == "frames":
            if text[:1] in (" ", "\t") or text.startswith(("File \"", "^")):
                return (self.chain, self.exc)
            self.state = "message"
            self.message_lines = 0
            return (self.chain, self.exc)
        if self.state == "message":
            self.message_lines += 1
            late = ts is not None and self.ts is not None and ts - self.ts >= 1.0
            if self.message_lines > MAX_MESSAGE_LINES or late:
                self.state = "idle"
                return None
            return (self.chain, self.exc)
        # "sep": lines between a separator and the next Traceback
        return (self.chain, self.exc)
