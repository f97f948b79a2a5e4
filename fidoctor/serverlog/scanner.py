"""The line-by-line scanner: normalise, anchor, match, follow tracebacks and builds.

This is the API the live watch calls on a passing stream (keep it stable)::

    from fidoctor.serverlog import Scanner
    sc = Scanner("server.log")
    for raw in stream:
        for hit in sc.feed(raw):      # LogHit: id, severity, line, quote, stream, anchored…
            ...
    result = sc.close()               # a JSON-able dict; serverlog.verdict turns results
                                      # of one or more logs into findings

Memory is constant in the log's length: per stream (rank/worker) a few
fields and the last lines of context; hits are capped per id (the rest are
counted); builds are capped.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_right
from collections import deque
from dataclasses import asdict, dataclass, field
from itertools import accumulate
from typing import Any, Deque, Dict, List, Optional, Set, Tuple

from fidoctor.serverlog import anchors
from fidoctor.serverlog.matchers import Matcher, all_matchers
from fidoctor.serverlog.normalise import ANSI, WrapDetector, clean, strip_prefixes
from fidoctor.serverlog.tracebacks import ChainTracker

MAX_STREAMS = 256
MAX_HITS_PER_ID = 40
MAX_BUILDS = 200
QUOTE_CHARS = 400
CONTEXT_LINES = 25
QUOTE_WINDOW = 200  # lines after a failed build in which its first compiler errors are quoted
RIGHT_BORDERS = ("│", "┃", "║")
HANG_WORDS = {"timed out", "timeout", "watchdog", " hang", "hung", "broadcast block"}


@dataclass
class LogHit:
    """One line that matched a finding id. ``anchored``: it can stand on its own (the line
    names a FlashInfer path) or the log showed a build-phase anchor before it."""

    id: str
    severity: str
    line: int
    quote: str
    stream: str = ""
    module: str = ""
    detail: Dict[str, str] = field(default_factory=dict)
    anchored: bool = False
    self_anchored: bool = False
    chain: Optional[Tuple[int, int]] = None  # (chain number, exception number) in its stream
    extra: List[Tuple[int, str]] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


class _Stream:
    __slots__ = ("key", "chains", "module", "recent", "waiting", "build", "last_ts",
                 "failed", "hits_since_build")

    def __init__(self, key: str) -> None:
        self.key = key
        self.chains = ChainTracker()
        self.module = ""
        self.recent: Deque[str] = deque(maxlen=CONTEXT_LINES)
        self.waiting: List[Tuple[LogHit, int]] = []  # hits that need a confirming line nearby
        self.build: Optional[Dict[str, Any]] = None
        self.last_ts: Optional[float] = None
        self.failed: Optional[LogHit] = None
        self.hits_since_build = 0


def trigger_words(matchers: List[Matcher]) -> List[str]:
    """Lower-case literals: a line holding none of them can be neither anchor nor hit."""
    words = set(anchors.TRIGGERS)
    for m in matchers:
        words.update(m.triggers)
    words.update(("timed out", "timeout", "watchdog", " hang", "hung", "broadcast block",
                  '{"toolchain"', "traceback (most recent", "during handling of the above",
                  "the above exception"))
    return sorted(words, key=len, reverse=True)


# Short keys that cover many trigger words: the block reader looks for these only.
# Not too short: "elf" would gate every "self." line of a traceback, "status" every
# "status_code", "driver" every "driver_worker".
GATES = ("undefined symbol", "unsupported", "[errno ", "[code=", "no space", "espacio",
         "espace", "speicherplatz", "sm75", "exit code", "is not defined for option",
         "above exception", "during handling", "file data", "too short", "locks available",
         "file handle", "read-only", "permission", "cannot find", "killed", "subcommand",
         "traceback")


def gate_keys(words: List[str]) -> List[str]:
    """The fewest literals such that every trigger word contains one of them."""
    pool = set(words) | set(GATES)
    keys = [k for k in pool if not any(o != k and o in k for o in pool)]
    assert all(any(k in w for k in keys) for w in words)
    return sorted(keys)


class Scanner:
    """Reads one log. ``feed`` takes raw lines (with or without their newline)."""

    def __init__(self, source: str = "-") -> None:
        self.source = source
        self.matchers = all_matchers()
        self.confirm = {m.id: m.confirm for m in self.matchers}
        self.words = trigger_words(self.matchers)
        self.prefilter = re.compile("|".join(re.escape(w) for w in self.words))
        # which matchers a found word can concern (its own triggers, or ones inside the word:
        # the prefilter reports the longest word at a position)
        self.by_word = {w: [i for i, m in enumerate(self.matchers) if w in m.triggers]
                        for w in self.words}
        self.anchor_words = {w for w in self.words if any(a in w or w in a
                                                          for a in anchors.TRIGGERS)}
        self.open_builds = 0
        self.quote_until = 0
        self.gates = gate_keys(self.words)
        self.line_no = 0
        self.streams: Dict[str, _Stream] = {}
        self.wrap = WrapDetector()
        self.pending: Optional[Tuple[str, int]] = None  # a line the terminal wrapped, held
        self.anchor: Optional[Dict[str, Any]] = None
        self.hits: List[LogHit] = []
        self.hit_counts: Dict[str, int] = {}
        self.builds: List[Dict[str, Any]] = []
        self.hang_signs: List[Dict[str, Any]] = []
        self.mentions = 0
        self.first_mention: Optional[Dict[str, Any]] = None
        self.first_ts: Optional[float] = None
        self.last_ts: Optional[float] = None

    # -- public ---------------------------------------------------------------------------

    def feed_block(self, text: str) -> None:
        """Many whole lines at once (``\\n``-separated), as the file reader passes them: the
        same result as ``feed`` per line, but only lines that hold a trigger word (or follow
        a wrapped line, or fall inside an open build) get the full per-line treatment; the
        others only count (line numbers, wrap widths). This is what makes 10 MB < 1 s."""
        if "\r\n" in text:
            text = text.replace("\r\n", "\n")
        if "\x1b" in text:
            text = ANSI.sub("", text)
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        low = text.lower()
        if len(low) != len(text):  # a case mapping changed lengths: offsets would not line up
            for ln in lines:
                self.feed(ln)
            return
        starts = [0, *accumulate(len(ln) + 1 for ln in lines)]
        cand: Set[int] = set()
        for key in self.gates:
            j = low.find(key)
            while j != -1:
                k = bisect_right(starts, j) - 1
                cand.add(k)
                j = low.find(key, starts[k + 1])
        observe, wrap = self.wrap.observe, self.wrap
        for i, ln in enumerate(lines):
            if (i in cand or self.pending is not None or self.open_builds or "\r" in ln
                    or ln[-1:] in RIGHT_BORDERS or self.line_no < self.quote_until):
                self.feed(ln)
                continue
            self.line_no += 1
            w = len(ln)
            if w >= WrapDetector.MIN_WIDTH:
                observe(w)
                if w == wrap.width:
                    self.pending = (ln, self.line_no)

    def feed(self, raw: str) -> List[LogHit]:
        self.line_no += 1
        out: List[LogHit] = []
        for piece in clean(raw):
            width = len(piece)
            self.wrap.observe(width)
            line = self.line_no
            if self.pending is not None:  # a terminal wrap is physical: whatever comes next
                prev, line = self.pending
                self.pending = None
                piece = prev + piece
            if width >= 60 and piece[-1] in RIGHT_BORDERS:  # a pane border: the line goes on
                self.pending = (piece[:-1], line)
                continue
            if self.wrap.is_wrapped(width):
                self.pending = (piece, line)
                continue
            out.extend(self._piece(piece, line))
        return out

    def _piece(self, piece: str, line: int) -> List[LogHit]:
        if not piece.strip():
            for st in self._streams_for_blank():
                st.chains.blank()
            return []
        n = strip_prefixes(piece)
        return self._line(self._stream(n.stream), n.text, line, n.ts, piece)

    def close(self) -> Dict[str, Any]:
        """Flush held lines and open builds; the result (plain data) for ``verdict``."""
        if self.pending is not None:
            piece, line = self.pending
            self.pending = None
            self._piece(piece, line)
        for st in list(self.streams.values()):
            if st.build is not None:
                self._end_build(st, None, "open")
        return {
            "path": self.source,
            "lines": self.line_no,
            "anchor": self.anchor,
            "hits": [h.to_dict() for h in self.hits],
            "hit_counts": dict(self.hit_counts),
            "builds": self.builds,
            "hang_signs": self.hang_signs,
            "flashinfer_mentions": self.mentions,
            "first_mention": self.first_mention,
            "span_s": (self.last_ts - self.first_ts
                       if self.first_ts is not None and self.last_ts is not None else None),
            "streams": sorted(k for k in self.streams if k)[:64],
        }

    # -- per line -------------------------------------------------------------------------

    def _streams_for_blank(self) -> List[_Stream]:
        return list(self.streams.values())[:8]

    def _stream(self, key: str) -> _Stream:
        st = self.streams.get(key)
        if st is None:
            if len(self.streams) >= MAX_STREAMS:
                key = "(other)"
                st = self.streams.get(key)
            if st is None:
                st = self.streams[key] = _Stream(key)
        return st

    def _line(self, st: _Stream, text: str, line: int, ts: Optional[float],
              quote: str) -> List[LogHit]:
        if ts is not None:
            st.last_ts = ts
            if self.first_ts is None:
                self.first_ts = ts
            self.last_ts = ts
        pos = st.chains.step(text, ts)
        out: List[LogHit] = []
        if st.waiting:
            self._confirm(st, text, out)
        low = text.lower()
        found = {w for w in self.words if w in low} if self.prefilter.search(low) else set()
        if st.failed is not None and len(st.failed.extra) < 3 and line < st.failed.line + QUOTE_WINDOW \
                and ("error" in low or "fatal" in low) \
                and not text.startswith(("FAILED", "ninja:", "RuntimeError: Ninja")):
            st.failed.extra.append((line, quote[:QUOTE_CHARS]))
        if not found:
            if st.build is not None and ts is not None and pos is None:
                self._end_build(st, ts, "finished")
            st.recent.append(text)
            return out
        if "flashinfer" in low:
            self.mentions += 1
            if self.first_mention is None:
                self.first_mention = {"line": line, "text": quote[:QUOTE_CHARS]}
        kind = anchors.anchor_of(text) if found & self.anchor_words else None
        jit_line = False
        if kind:
            jit_line = True
            if self.anchor is None:
                self.anchor = {"line": line, "kind": kind, "text": quote[:QUOTE_CHARS],
                               "stream": st.key}
            mod = anchors.module_of(text)
            if mod:
                st.module = mod
            self._builds(st, text, line, ts, quote)
        elif text.startswith('{"toolchain"'):
            self._jsonl(text, line)
        hang = bool(found & HANG_WORDS) and bool(anchors.HANG_SIGN.search(text))
        if st.build is not None and hang:
            self.hang_signs.append({"line": line, "text": quote[:QUOTE_CHARS], "stream": st.key})
            del self.hang_signs[5:]
        todo: Set[int] = set()
        for w in found:
            todo.update(self.by_word[w])
        for i in sorted(todo):
            m = self.matchers[i]
            detail = m.match(text)
            if detail is None:
                continue
            hit = LogHit(m.id, m.severity, line, quote[:QUOTE_CHARS], st.key, st.module, detail,
                         chain=pos)
            hit.self_anchored = m.self_anchored(detail)
            hit.anchored = hit.self_anchored or self.anchor is not None
            conf = self.confirm.get(m.id)
            if conf and not hit.self_anchored and not any(conf[0].search(r) for r in st.recent):
                st.waiting.append((hit, conf[1]))
                continue
            self._keep(st, hit, out)
        if (st.build is not None and ts is not None and pos is None and not jit_line
                and not out and not hang):
            self._end_build(st, ts, "finished")
        st.recent.append(text)
        return out

    def _confirm(self, st: _Stream, text: str, out: List[LogHit]) -> None:
        keep: List[Tuple[LogHit, int]] = []
        for hit, left in st.waiting:
            conf = self.confirm.get(hit.id)
            if conf and conf[0].search(text):
                hit.anchored = True
                self._keep(st, hit, out)
            elif left > 1:
                keep.append((hit, left - 1))
        st.waiting = keep

    def _keep(self, st: _Stream, hit: LogHit, out: List[LogHit]) -> None:
        n = self.hit_counts.get(hit.id, 0) + 1
        self.hit_counts[hit.id] = n
        if hit.id == "jit-build-failed":
            if st.failed is not None and st.failed.chain == hit.chain:
                return  # one build failure reads as several lines (FAILED, stopped, RuntimeError)
            st.failed = hit
            self.quote_until = hit.line + QUOTE_WINDOW  # every line gets looked at for errors
        if n <= MAX_HITS_PER_ID:
            self.hits.append(hit)
        if st.build is not None and hit.severity == "error":
            self._end_build(st, None, "failed")
        out.append(hit)

    # -- builds ---------------------------------------------------------------------------

    def _builds(self, st: _Stream, text: str, line: int, ts: Optional[float], quote: str) -> None:
        m = anchors.BUILD_START.search(text)
        if m:
            if st.build is not None:
                self._end_build(st, ts, "finished" if ts is not None else "open")
            self.open_builds += 1
            st.build = {"module": m.group("new") or m.group("old"), "start_line": line,
                        "start_ts": ts, "start_text": quote[:QUOTE_CHARS], "stream": st.key}
            return
        f = anchors.BUILD_FINISH.search(text)
        if f and st.build is not None and st.build["module"] == f.group("name"):
            st.build["end_text"] = quote[:QUOTE_CHARS]
            st.build["end_line"] = line
            self._end_build(st, ts, "finished", explicit=True)

    def _end_build(self, st: _Stream, ts: Optional[float], outcome: str,
                   explicit: bool = False) -> None:
        b = st.build
        st.build = None
        if b is None:
            return
        self.open_builds -= 1
        b["outcome"] = outcome
        b["explicit_end"] = explicit
        if ts is not None and b.get("start_ts") is not None:
            b["seconds"] = round(max(0.0, ts - b["start_ts"]), 1)
        elif outcome == "open" and st.last_ts is not None and b.get("start_ts") is not None:
            b["open_for_s"] = round(max(0.0, st.last_ts - b["start_ts"]), 1)
        b["end_line"] = b.get("end_line", self.line_no)
        if len(self.builds) < MAX_BUILDS:
            self.builds.append(b)

    def _jsonl(self, text: str, line: int) -> None:
        """A FLASHINFER_JIT_BUILD_LOG record (0.7.4+) pasted into the log: a finished build."""
        try:
            rec = json.loads(text)
        except ValueError:
            return
        if not isinstance(rec, dict) or "name" not in rec or "seconds" not in rec:
            return
        if len(self.builds) < MAX_BUILDS:
            self.builds.append({"module": str(rec["name"]), "start_line": line, "end_line": line,
                                "seconds": float(rec.get("seconds") or 0), "outcome": "finished",
                                "explicit_end": True, "toolchain": rec.get("toolchain"),
                                "start_text": text[:QUOTE_CHARS], "stream": ""})

