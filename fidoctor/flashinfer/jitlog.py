"""Stream ``flashinfer_jit.log`` in every format, in constant memory.

Formats (flashinfer-jit.md §2):
  0.2.0–0.2.11  ``<ts> - INFO - flashinfer.jit: Loading JIT ops: <name>``
                ``<ts> - INFO - flashinfer.jit: Finished loading JIT ops: <name>``
  0.2.12+       ``<ts> - INFO - core.py:123 - flashinfer.jit: <message>``
  0.7.x         ``… flashinfer.jit: Building JIT module <name>; this can take several
                minutes on first use.`` (no finished line, ever)

Logs reach hundreds of MB, so we scan fixed-size chunks with one regex and
keep only the last start/finish per module. Lines that are not valid UTF-8 or
contain NUL bytes are skipped and counted, never fatal.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from typing import Any, Dict, List, Optional

from fidoctor.fsutil import open_regular

CHUNK = 4 << 20
MAX_LINE = 1 << 20  # a "line" longer than this is garbage; drop it and carry on
KEEP_LINE = 600  # bytes of a matched line kept as evidence

MARK = re.compile(
    rb"flashinfer\.jit: ?(Loading JIT ops|Finished loading JIT ops|Building JIT module)"
    rb" ?:? ?([A-Za-z0-9_]+)"
)
TS = re.compile(rb"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:,(\d{3}))?")
NEW_STYLE = re.compile(rb" - [A-Z]+ - [\w.]+\.py:\d+ - flashinfer\.jit:")
EVENTS = {
    b"Loading JIT ops": "loading",
    b"Finished loading JIT ops": "finished",
    b"Building JIT module": "building",
}


def parse_timestamp(line: bytes) -> Optional[float]:
    """Epoch seconds of a log line's local-time stamp, or None."""
    m = TS.match(line)
    if not m:
        return None
    try:
        t = time.mktime(time.strptime(m.group(1).decode(), "%Y-%m-%d %H:%M:%S"))
    except (ValueError, OverflowError):
        return None
    return t + (int(m.group(2)) / 1000 if m.group(2) else 0.0)


SUB_BLOCK = 64 << 10


def _is_clean(buf: bytes) -> bool:
    if b"\0" in buf:
        return False
    if buf.isascii():
        return True
    try:
        buf.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class _State:
    """Running totals; per module only the offset of its last start and finish."""

    def __init__(self) -> None:
        self.last: Dict[tuple, int] = {}
        self.count: Dict[tuple, int] = {}
        self.lines = 0
        self.garbage = 0

    def dump(self) -> Dict[str, Any]:
        return {
            "lines": self.lines,
            "garbage": self.garbage,
            "events": [[e.decode(), n.decode(), off, self.count[(e, n)]]
                       for (e, n), off in self.last.items()],
        }

    @classmethod
    def load(cls, d: Dict[str, Any]) -> _State:
        st = cls()
        st.lines, st.garbage = int(d["lines"]), int(d["garbage"])
        for e, n, off, cnt in d["events"]:
            key = (e.encode(), n.encode())
            st.last[key], st.count[key] = int(off), int(cnt)
        return st

    def scan(self, buf: bytes, base: int) -> None:
        """Scan complete lines in ``buf`` (which starts at file offset ``base``)."""
        self.lines += buf.count(b"\n")
        if _is_clean(buf):
            self._scan_clean(buf, base)
            return
        # Garbage somewhere: narrow it down to 64 KiB blocks, then to lines.
        pos = 0
        while pos < len(buf):
            cut = buf.find(b"\n", pos + SUB_BLOCK)
            end = len(buf) if cut < 0 else cut + 1
            block = buf[pos:end]
            if _is_clean(block):
                self._scan_clean(block, base + pos)
            else:
                self._scan_lines(block, base + pos)
            pos = end

    def _scan_clean(self, buf: bytes, base: int) -> None:
        last, count = self.last, self.count
        for m in MARK.finditer(buf):
            key = m.group(1, 2)
            last[key] = base + m.start()
            count[key] = count.get(key, 0) + 1

    def _scan_lines(self, buf: bytes, base: int) -> None:
        pos = 0
        for line in buf.split(b"\n"):
            off = base + pos
            pos += len(line) + 1
            if not line:
                continue
            if not _is_clean(line):
                self.garbage += 1
                continue
            self._scan_clean(line, off)


def _line_at(f, offset: int) -> bytes:
    """The whole line around a match at ``offset`` (bounded to a few KiB)."""
    start = max(0, offset - 512)
    f.seek(start)
    data = f.read(offset - start + 4096)
    rel = offset - start
    ls = data.rfind(b"\n", 0, rel) + 1
    le = data.find(b"\n", rel)
    return data[ls : le if le >= 0 else len(data)][:KEEP_LINE]


def _identity(f, st_ino: int, n: int) -> List[Any]:
    """What must not change for a saved parse to be resumable: inode and first ``n`` bytes."""
    f.seek(0)
    head = f.read(min(n, 1024))
    return [st_ino, hashlib.sha1(head).hexdigest(), len(head)]


def parse_log(path: str, budget_s: float = 8.0,
              resume: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Facts from one JIT log: per-module last start/finish, counts, format seen.

    Stops after ``budget_s`` seconds and says so (``complete: False``) rather
    than letting a runaway log eat the whole diagnose budget. FlashInfer only
    ever appends to this file, so ``resume`` (the ``state`` a previous call
    returned) lets us read just the new tail; a rotated or rewritten log (other
    inode, other first KiB, or shorter than before) is parsed from scratch.
    """
    t0 = time.monotonic()
    st = _State()
    complete = True
    offset = 0
    resumed = False
    with open_regular(path) as f:
        info = os.fstat(f.fileno())
        old = (resume or {}).get("identity") or [None, None, 0]
        if resume and resume.get("complete") and old == _identity(f, info.st_ino, old[2]) \
                and resume.get("offset", 0) <= info.st_size:
            try:
                st = _State.load(resume["state"])
                offset = int(resume["offset"])
                resumed = True
            except (KeyError, TypeError, ValueError):
                st, offset = _State(), 0
        f.seek(offset)
        carry = b""
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                break
            data = carry + chunk
            cut = data.rfind(b"\n")
            if cut < 0:
                carry = data
                if len(carry) > MAX_LINE:
                    st.garbage += 1
                    offset += len(carry)
                    carry = b""
                continue
            st.scan(data[: cut + 1], offset)
            offset += cut + 1
            carry = data[cut + 1 :]
            if time.monotonic() - t0 > budget_s:
                complete = False
                break
        # Resume later from before an unterminated last line: its writer may finish it.
        saved = {"identity": _identity(f, info.st_ino, offset), "offset": offset,
                 "complete": complete, "state": st.dump()}
        if carry and complete:  # a last line with no newline still counts now
            st.scan(carry + b"\n", offset)
            offset += len(carry)
        modules: Dict[str, Dict[str, Any]] = {}
        new_style = 0
        for (event, name), off in st.last.items():
            kind = EVENTS[event]
            mod = modules.setdefault(name.decode(), {"starts": 0, "finishes": 0})
            mod["finishes" if kind == "finished" else "starts"] += st.count[(event, name)]
            line = _line_at(f, off)
            new_style += bool(NEW_STYLE.search(line))
            key = "last_finish" if kind == "finished" else "last_start"
            if key in mod and mod[key]["offset"] > off:
                continue  # "Loading" and "Building" both count as starts
            mod[key] = {
                "offset": off,
                "event": kind,
                "line": line.decode("utf-8", "replace"),
                "ts": parse_timestamp(line),
            }
    fmt = "none"
    if modules:
        if any(m.get("last_start", {}).get("event") == "building" for m in modules.values()):
            fmt = "0.7"
        elif new_style:
            fmt = "0.2.12+"
        else:
            fmt = "0.2.0-0.2.11"
    return {
        "path": path,
        "resumed": resumed,
        "state": saved,
        "bytes_read": offset,
        "complete": complete,
        "lines": st.lines,
        "garbage_lines": st.garbage,
        "events": sum(st.count.values()),
        "format": fmt,
        "modules": modules,
    }
