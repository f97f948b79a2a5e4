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

Newest first: when more is unread than a parse can cover in its budget
(``TAIL_FIRST_BYTES``), the last ``TAIL_BYTES`` are parsed first — that is
where the build hanging *now* is logged — and the older part goes on from
the saved offset with what is left of a short budget. The saved offset
advances on every run, even one cut short, so the whole log is eventually
read once and then only its new tail. Where a stretch of the log was not
read (``unread_gap``), a ``Loading`` line before the gap is not judged
unfinished: its ``Finished`` line may be in the gap.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from typing import Any, Dict, List, Optional, Tuple

from fidoctor.fsutil import open_regular

CHUNK = 4 << 20
MAX_LINE = 1 << 20  # a "line" longer than this is garbage; drop it and carry on
KEEP_LINE = 600  # bytes of a matched line kept as evidence

MARK = re.compile(
    rb"flashinfer\.jit: ?(Loading JIT ops|Finished loading JIT ops|Building JIT module)"
    rb" ?:? ?([A-Za-z0-9_]+)"
)
TS = re.compile(rb"^(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:,(\d{3}))?")
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
    y, mo, d, h, mi, sec = (int(x) for x in m.group(1, 2, 3, 4, 5, 6))
    # time.strptime costs ~30 µs a call (10,000 modules: a second); this is ~2 µs.
    if not (1 <= mo <= 12 and 1 <= d <= 31 and h <= 23 and mi <= 59 and sec <= 61):
        return None
    try:
        t = time.mktime((y, mo, d, h, mi, sec, 0, 0, -1))
    except (ValueError, OverflowError):
        return None
    return t + (int(m.group(7)) / 1000 if m.group(7) else 0.0)


class _Clock:
    """``parse_timestamp`` with ``mktime`` done once per distinct hour (lines share hours)."""

    def __init__(self) -> None:
        self._hours: Dict[bytes, Optional[float]] = {}

    def parse(self, line: bytes) -> Optional[float]:
        m = TS.match(line)
        if not m:
            return None
        hour = line[:13]
        if hour not in self._hours:
            self._hours[hour] = parse_timestamp(line[:13] + b":00:00")
        base = self._hours[hour]
        mi, sec = int(m.group(5)), int(m.group(6))
        if base is None or mi > 59 or sec > 61:
            return None
        return base + mi * 60 + sec + (int(m.group(7)) / 1000 if m.group(7) else 0.0)


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
    data = os.pread(f.fileno(), offset - start + KEEP_LINE + 512, start)
    rel = offset - start
    ls = data.rfind(b"\n", 0, rel) + 1
    le = data.find(b"\n", rel)
    return data[ls : le if le >= 0 else len(data)][:KEEP_LINE]


def _identity(f, st_ino: int, n: int) -> List[Any]:
    """What must not change for a saved parse to be resumable: inode and first ``n`` bytes."""
    f.seek(0)
    head = f.read(min(n, 1024))
    return [st_ino, hashlib.sha1(head).hexdigest(), len(head)]


TAIL_FIRST_BYTES = 256 << 20  # more unread than this: read the newest part first
TAIL_BYTES = 8 << 20  # the newest part: ~50,000 lines, thousands of builds
TAIL_FORWARD_S = 0.3  # then the older part, from the saved offset, for this long


def _scan_range(f, st: _State, pos: int, end: int,
                deadline: Optional[float]) -> Tuple[int, bytes, bool]:
    """Scan whole lines of ``[pos, end)`` into ``st``; (next offset, carry, reached end)."""
    f.seek(pos)
    carry = b""
    while pos + len(carry) < end:
        chunk = f.read(min(CHUNK, end - pos - len(carry)))
        if not chunk:
            break
        data = carry + chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            carry = data
            if len(carry) > MAX_LINE:
                st.garbage += 1
                pos += len(carry)
                carry = b""
            continue
        st.scan(data[: cut + 1], pos)
        pos += cut + 1
        carry = data[cut + 1 :]
        if deadline is not None and time.monotonic() > deadline:
            return pos, carry, False
    return pos, carry, True


def _line_start_after(f, pos: int) -> int:
    """The offset of the first line that starts at or after ``pos``."""
    if pos <= 0:
        return 0
    f.seek(pos - 1)
    data = f.read(MAX_LINE)
    cut = data.find(b"\n")
    return pos + cut if cut >= 0 else pos + len(data)


def parse_log(path: str, budget_s: float = 8.0,
              resume: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Facts from one JIT log: per-module last start/finish, counts, format seen.

    Stops after ``budget_s`` seconds and says so (``complete: False``) rather
    than letting a runaway log eat the whole diagnose budget. FlashInfer only
    ever appends to this file, so ``resume`` (the ``state`` a previous call
    returned) lets us read just the new tail; a rotated or rewritten log (other
    inode, other first KiB, or shorter than before) is parsed from scratch.
    A saved parse that was cut short resumes too: its state covers exactly the
    bytes before its offset. More unread than ``TAIL_FIRST_BYTES``: newest
    first (see the module docstring).
    """
    t0 = time.monotonic()
    st = _State()
    offset = 0
    resumed = False
    tail: Optional[_State] = None
    tail_from = None
    with open_regular(path) as f:
        info = os.fstat(f.fileno())
        size = info.st_size
        old = (resume or {}).get("identity") or [None, None, 0]
        try:
            if resume and old == _identity(f, info.st_ino, int(old[2])) \
                    and 0 <= int(resume.get("offset", 0)) <= size:
                st = _State.load(resume["state"])
                offset = int(resume["offset"])
                resumed = True
        except (KeyError, TypeError, ValueError, IndexError):
            st, offset = _State(), 0
        if size - offset > TAIL_FIRST_BYTES:
            tail_from = _line_start_after(f, size - TAIL_BYTES)
            tail = _State()
            _, tcarry, _ = _scan_range(f, tail, tail_from, size, None)
            if tcarry:
                tail.scan(tcarry + b"\n", size - len(tcarry))
            deadline = time.monotonic() + min(TAIL_FORWARD_S, max(0.0, budget_s
                                                                  - (time.monotonic() - t0)))
            offset, carry, _ = _scan_range(f, st, offset, tail_from, deadline)
            complete = False
        else:
            offset, carry, complete = _scan_range(f, st, offset, size, t0 + budget_s)
        # Resume later from before an unterminated last line: its writer may finish it.
        saved = {"identity": _identity(f, info.st_ino, offset), "offset": offset,
                 "complete": complete, "state": st.dump()}
        if carry and complete:  # a last line with no newline still counts now
            st.scan(carry + b"\n", offset)
            offset += len(carry)
        gap = [offset, tail_from] if tail is not None and tail_from is not None \
            and offset < tail_from else None
        last, count = dict(st.last), dict(st.count)
        if tail is not None:
            for ev_name, off in tail.last.items():
                last[ev_name] = off
                count[ev_name] = count.get(ev_name, 0) + tail.count[ev_name]
        modules: Dict[str, Dict[str, Any]] = {}
        new_style = 0
        for (event, name), off in last.items():
            kind = EVENTS[event]
            mod = modules.setdefault(name.decode(), {"starts": 0, "finishes": 0})
            mod["finishes" if kind == "finished" else "starts"] += count[(event, name)]
            key = "last_finish" if kind == "finished" else "last_start"
            if key in mod and mod[key]["offset"] > off:
                continue  # "Loading" and "Building" both count as starts
            mod[key] = {"offset": off, "event": kind}
        # Lines and times only for the events kept (10,000 modules: 20,000 short preads).
        clock = _Clock()
        for mod in modules.values():
            for which in ("last_start", "last_finish"):
                ev = mod.get(which)
                if ev is None:
                    continue
                line = _line_at(f, ev["offset"])
                new_style += bool(NEW_STYLE.search(line))
                ev["line"] = line.decode("utf-8", "replace")
                ev["ts"] = clock.parse(line)
        if gap:
            # A Loading line before the unread stretch may have its Finished line in it.
            for name in [n for n, m in modules.items()
                         if m.get("last_start", {}).get("event") == "loading"
                         and m["last_start"]["offset"] < gap[1]
                         and m.get("last_finish", {}).get("offset", -1)
                         < m["last_start"]["offset"]]:
                del modules[name]
    fmt = "none"
    if modules:
        if any(m.get("last_start", {}).get("event") == "building" for m in modules.values()):
            fmt = "0.7"
        elif new_style:
            fmt = "0.2.12+"
        else:
            fmt = "0.2.0-0.2.11"
    lines = st.lines + (tail.lines if tail else 0)
    garbage = st.garbage + (tail.garbage if tail else 0)
    out = {
        "path": path,
        "resumed": resumed,
        "state": saved,
        "bytes_read": offset + ((size - tail_from) if tail_from is not None else 0),
        "complete": complete,
        "lines": lines,
        "garbage_lines": garbage,
        "events": sum(count.values()),
        "format": fmt,
        "modules": modules,
    }
    if tail_from is not None:
        out["newest_first"] = {"tail_from": tail_from, "size": size,
                               "unread_gap": gap}
    return out
