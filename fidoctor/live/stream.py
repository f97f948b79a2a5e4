"""Recognise fatal lines in the server's output as it passes.

The matching is ``fidoctor.serverlog``'s (issue 15: one ``Scanner`` per stream, fed line by
line; it strips vLLM/SGLang/Ray prefixes, follows tracebacks and maps lines onto the probes'
finding ids). Here we only cut the passing bytes into lines and keep the hits whose severity is
``error``. A hit only says *that* something fatal passed; the session then runs the diagnosis,
which explains it with the machine's evidence.

Lines are cut at ``MAX_LINE`` bytes; a partial line waits for its newline (or the cap).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

from fidoctor.serverlog import Scanner

MAX_LINE = 64 << 10


@dataclass
class Hit:
    stream: str
    line: str
    kind: str                      # the finding id serverlog matched
    finding_id: Optional[str] = None


class LineWatch:
    """Feed raw chunks per stream; get the fatal lines back."""

    def __init__(self) -> None:
        self._buf: Dict[str, bytes] = {}
        self._scanners: Dict[str, Scanner] = {}
        self.lines = 0

    def feed(self, stream: str, chunk: bytes) -> List[Hit]:
        buf = self._buf.get(stream, b"") + chunk
        *done, rest = buf.split(b"\n")
        if len(rest) > MAX_LINE:
            done.append(rest)
            rest = b""
        self._buf[stream] = rest
        hits: List[Hit] = []
        for raw in done:
            hits += self.match(stream, raw[:MAX_LINE].decode("utf-8", "replace"))
        return hits

    def flush(self) -> List[Hit]:
        hits: List[Hit] = []
        for stream, rest in list(self._buf.items()):
            if rest:
                hits += self.match(stream, rest.decode("utf-8", "replace"))
        self._buf.clear()
        return hits

    def match(self, stream: str, line: str) -> List[Hit]:
        self.lines += 1
        sc = self._scanners.get(stream)
        if sc is None:
            sc = self._scanners[stream] = Scanner(f"<server {stream}>")
        try:
            found = sc.feed(line)
        except Exception:  # noqa: BLE001 - a matcher bug must never stop the passthrough
            return []
        return [Hit(stream, h.quote.strip(), h.id, h.id) for h in found if h.severity == "error"]
