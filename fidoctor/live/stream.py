"""Recognise fatal lines in the server's output as it passes.

The matchers that map server output onto finding ids belong to ``fidoctor.serverlog``
(issue 15). When that package offers ``match_line(line) -> Optional[match]`` (a match with
``id`` and ``title`` attributes, or a dict with those keys), it is used; until then the few
lines below, which FlashInfer and its toolchain print verbatim, are recognised here. Either
way a hit only says *that* something fatal passed; the diagnosis explains it.

Lines are cut at ``MAX_LINE`` bytes; a partial line waits for its newline (or the cap).
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

MAX_LINE = 64 << 10
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

# (pattern, short kind) — lines FlashInfer 0.2–0.7, ninja and nvcc print themselves
BUILTIN = [
    (re.compile(r"Ninja build failed|ninja: build stopped: subcommand failed"), "ninja-failed"),
    (re.compile(r"Error building extension '"), "ninja-failed"),
    (re.compile(r"undefined symbol: \S+"), "undefined-symbol"),
    (re.compile(r"(?:^|\s)(?:fatal )?error: .*(?:No such file|unsupported|not found|#error)"),
     "compile-error"),
    (re.compile(r"\.cu\(\d+\): error"), "compile-error"),
    (re.compile(r"nvcc fatal\s*:"), "compile-error"),
    (re.compile(r"MissingJITCacheError|JIT compilation is disabled"), "jit-disabled"),
    (re.compile(r"FlashInfer requires GPUs with sm75"), "arch-unsupported"),
]


@dataclass
class Hit:
    stream: str
    line: str
    kind: str              # our short kind, or the serverlog finding id
    finding_id: Optional[str] = None


def _serverlog_matcher() -> Optional[Callable[[str], object]]:
    try:
        mod = importlib.import_module("fidoctor.serverlog")
    except ImportError:
        return None
    fn = getattr(mod, "match_line", None)
    return fn if callable(fn) else None


class LineWatch:
    """Feed raw chunks per stream; get the fatal lines back."""

    def __init__(self) -> None:
        self._buf: Dict[str, bytes] = {}
        self._external = _serverlog_matcher()
        self.lines = 0

    def feed(self, stream: str, chunk: bytes) -> List[Hit]:
        buf = self._buf.get(stream, b"") + chunk
        *done, rest = buf.split(b"\n")
        if len(rest) > MAX_LINE:
            done.append(rest)
            rest = b""
        self._buf[stream] = rest
        hits = []
        for raw in done:
            self.lines += 1
            hit = self.match(stream, raw[:MAX_LINE].decode("utf-8", "replace"))
            if hit is not None:
                hits.append(hit)
        return hits

    def flush(self) -> List[Hit]:
        hits = []
        for stream, rest in list(self._buf.items()):
            if rest:
                hit = self.match(stream, rest.decode("utf-8", "replace"))
                if hit:
                    hits.append(hit)
        self._buf.clear()
        return hits

    def match(self, stream: str, line: str) -> Optional[Hit]:
        text = ANSI.sub("", line).rstrip("\r")
        if self._external is not None:
            try:
                m = self._external(text)
            except Exception:  # noqa: BLE001 - a matcher bug must not stop the passthrough
                m = None
            if m is not None:
                fid = m.get("id") if isinstance(m, dict) else getattr(m, "id", None)
                return Hit(stream, text.strip(), str(fid or "server-error"), fid and str(fid))
        for rx, kind in BUILTIN:
            if rx.search(text):
                return Hit(stream, text.strip(), kind)
        return None
