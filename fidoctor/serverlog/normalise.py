"""Turn one raw line of server output into what the matchers read.

Why: real pastes are wrapped in whatever printed them. The formats below were
read in the serving stacks' own source, so the prefixes are stripped exactly,
never guessed:

- vLLM's logger: ``_FORMAT = "%(levelname)s %(asctime)s [%(fileinfo)s:%(lineno)d]
  %(message)s"`` with ``_DATE_FORMAT = "%m-%d %H:%M:%S"`` (older releases:
  ``%(filename)s:%(lineno)d]`` without the bracket); its ``NewLineFormatter``
  repeats the prefix after ``\\r\\n`` on every line of a multi-line message.
- vLLM's worker processes: ``_add_prefix`` writes ``(Worker_TP0 pid=451) ``
  (cyan unless NO_COLOR) before every line a worker prints.
- Ray: ``(RayWorkerWrapper pid=231741, ip=10.0.0.2) `` or ``(pid=20614) ``,
  nested when Ray runs vLLM runs workers, and ``[repeated 3x across cluster]``
  (plus "(Ray deduplicates logs by default. …)") after deduplicated lines.
- SGLang's ``configure_logger``: ``format = f"[%(asctime)s{prefix}] %(message)s"``
  with ``datefmt`` ``%Y-%m-%d %H:%M:%S`` (older: ``%H:%M:%S``, ``%m-%d %H:%M:%S``)
  and prefixes such as `` TP0``, `` DP1 TP3``, `` PP0 TP1 EP1``.
- torch.distributed (torchrun/elastic): ``[rank0]: `` before each line.
- FlashInfer's JIT logger: ``%(asctime)s - %(levelname)s - %(filename)s:%(lineno)d -
  flashinfer.jit: %(message)s`` (kept: the matchers read it), its time read.
- ``kubectl logs --timestamps`` / docker: an RFC 3339 stamp and a space.

Also: ANSI colour and cursor sequences, carriage returns (a bare ``\\r``
splits a line, as a terminal would overwrite it), a terminal or tmux border
``│ … │`` around the text. The *stream* of a line (its rank or worker) is the
text of the prefixes, so interleaved ranks can be told apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
K8S_TS = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)? ")
# (Worker_TP0 pid=451) · (EngineCore_DP0 pid=1) · (pid=20614) · (RayWorkerWrapper pid=1, ip=10.0.0.1)
# · (VllmWorker rank=1 pid=572) in vLLM 0.8
# · (Worker (TP0)) in the newest vLLM's simplified names
PROC_PREFIX = re.compile(
    r"\((?:(?P<name>[A-Za-z_][\w.\-]*(?: \([^()]{1,20}\))?)(?: rank=\d+)?(?: pid=(?P<pid>\d+))?"
    r"|pid=(?P<pid2>\d+))(?:, ip=[0-9a-fA-F.:]+)?\) ?")
TORCH_RANK = re.compile(r"\[(?P<rank>(?:default)?rank\d+)\]: ?")
SGLANG = re.compile(
    r"\[(?:(?P<y>\d{4})-)?(?:(?P<mo>\d\d)-(?P<d>\d\d) )?(?P<h>\d\d):(?P<mi>\d\d):(?P<s>\d\d)"
    r"(?:[.,]\d+)?(?P<rank>(?: [A-Z][A-Za-z]{0,5}\d+)*)\] ")
VLLM = re.compile(
    r"(?:DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL) +(?P<mo>\d\d)-(?P<d>\d\d) "
    r"(?P<h>\d\d):(?P<mi>\d\d):(?P<s>\d\d)(?:[.,]\d+)? (?:\[[^\]\s]+:\d+\]|[^\s\]]+:\d+\]) ")
PYLOG_TS = re.compile(r"(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)[,.]\d+ - ")
RAY_REPEAT = re.compile(r" ?\[repeated \d+x across cluster\](?: \(Ray deduplicates logs.*)?$")
BORDERS = "│┃║|"


def clock(mo: Optional[str], d: Optional[str], h: str, mi: str, s: str) -> float:
    """Seconds since an arbitrary origin; the year is ignored so that formats with and
    without one (vLLM's ``%m-%d``, FlashInfer's ``%Y-%m-%d``) compare within a log."""
    days = (int(mo) * 31 + int(d)) if mo and d else 0
    return ((days * 24 + int(h)) * 60 + int(mi)) * 60 + float(s)


@dataclass
class Norm:
    """One line, ready for matching: ``text`` without prefixes, ``stream`` the rank or
    worker it came from ("" when none), ``ts`` a comparable time when a prefix had one."""

    text: str
    stream: str
    ts: Optional[float]


def strip_prefixes(line: str) -> Norm:
    """Peel the known prefixes off the start of ``line`` (any order, nested)."""
    streams: List[str] = []
    ts: Optional[float] = None
    pos = 0
    for _ in range(8):  # prefixes nest (Ray → vLLM engine → worker); never loop forever
        c = line[pos:pos + 1]
        if not c:
            break
        m = None
        if c == "(":
            m = PROC_PREFIX.match(line, pos)
            if m:
                name = m.group("name") or ""
                pid = m.group("pid") or m.group("pid2")
                streams.append(f"{name} pid={pid}".strip() if pid else name)
        elif c == "[":
            m = TORCH_RANK.match(line, pos)
            if m:
                streams.append(m.group("rank"))
            else:
                m = SGLANG.match(line, pos)
                if m:
                    ts = clock(m.group("mo"), m.group("d"), m.group("h"), m.group("mi"),
                               m.group("s"))
                    if m.group("rank"):
                        streams.append(m.group("rank").strip())
        elif c.isdigit():
            m = K8S_TS.match(line, pos)
            if m:
                g = m.groups()
                ts = clock(g[1], g[2], g[3], g[4], g[5])
            else:
                p = PYLOG_TS.match(line, pos)
                if p:  # FlashInfer's own logger: keep the text, read the time
                    g = p.groups()
                    ts = clock(g[1], g[2], g[3], g[4], g[5])
        elif c in "DIWEC":
            m = VLLM.match(line, pos)
            if m:
                ts = clock(m.group("mo"), m.group("d"), m.group("h"), m.group("mi"), m.group("s"))
        if not m:
            break
        pos = m.end()
    text = line[pos:] if pos else line
    if "across cluster]" in text:
        text = RAY_REPEAT.sub("", text)
    return Norm(text, " ".join(streams), ts)


def clean(raw: str) -> List[str]:
    """ANSI out, carriage returns split (the last piece is what a terminal shows, but every
    piece was printed, so every piece is kept), trailing whitespace and borders removed."""
    if "\x1b" in raw:
        raw = ANSI.sub("", raw)
    raw = raw.rstrip("\r\n")
    pieces = raw.split("\r") if "\r" in raw else [raw]
    out = []
    for p in pieces:
        p = p.rstrip()
        if len(p) > 2 and p[0] in BORDERS and p[-1] == p[0]:
            p = p[1:-1].strip()
        out.append(p)
    return out


class WrapDetector:
    """Rejoins lines a terminal wrapped at a fixed width, once that width is evident:
    the longest line length seen at least three times (and at least 60 columns). A line
    of exactly that width is held and joined with the next line of the same stream."""

    MIN_WIDTH = 60

    def __init__(self) -> None:
        self.counts: dict = {}
        self.longest = 0
        self.width: Optional[int] = None

    def observe(self, n: int) -> None:
        if n < self.MIN_WIDTH:
            return
        if n > self.longest:
            self.longest = n
            if self.width is not None and n > self.width:
                self.width = None  # a longer line: what looked like a wrap was not one
        c = self.counts.get(n, 0) + 1
        if len(self.counts) < 512 or n in self.counts:
            self.counts[n] = c
        if c >= 3 and n == self.longest:
            self.width = n

    def is_wrapped(self, n: int) -> bool:
        return self.width is not None and n == self.width

