"""The journal: an append-only, fsynced record of what a fix is about to do and did.

Layout under ``fidoctor.paths.state_dir()``::

    transactions/<txid>/journal.jsonl   one JSON object per line
    transactions/<txid>/backups/        copies of every file a step replaces
    transactions/<txid>/removed/        files fidoctor created and later took back

Records, in order: ``begin`` (the plan), then per step ``intent`` (written and
fsynced *before* the step touches anything) and ``done`` (after it), then one
ending: ``commit``, ``rolled-back`` (a failed or interrupted fix was reverted)
or, later, ``undone``. ``reverted`` records mark steps already reverted, so an
undo that is itself interrupted resumes where it stopped. A torn last line (a
crash mid-write) is ignored: the step it described was not started.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from fidoctor.fsutil import fsync_dir
from fidoctor.paths import state_dir

ENDINGS = ("commit", "rolled-back", "undone")
MAX_LINES = 500_000  # a 10,000-module --clear-incomplete writes about 30,000
MAX_WARNINGS = 20


def tx_root(env: Optional[Dict[str, str]] = None) -> str:
    return os.path.join(state_dir(env), "transactions")


def new_txid() -> str:
    """Sortable by time, unique enough for one user's fixes."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


@dataclass
class Journal:
    """One transaction's journal file; every append is flushed and fsynced."""

    dir: str
    records: List[Dict[str, Any]] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)  # lines skipped when it was read

    @property
    def txid(self) -> str:
        return os.path.basename(self.dir)

    @property
    def path(self) -> str:
        return os.path.join(self.dir, "journal.jsonl")

    @property
    def backups(self) -> str:
        return os.path.join(self.dir, "backups")

    @property
    def removed(self) -> str:
        return os.path.join(self.dir, "removed")

    @classmethod
    def create(cls, root: str, txid: str, header: Dict[str, Any]) -> Journal:
        os.makedirs(root, 0o700, exist_ok=True)
        d = os.path.join(root, txid)
        os.mkdir(d, 0o700)
        fsync_dir(root)
        j = cls(d)
        j.append(dict(header, op="begin", txid=txid, time=time.time(), pid=os.getpid()))
        fsync_dir(d)  # the journal file's own directory entry
        return j

    @classmethod
    def load(cls, d: str) -> Journal:
        """Read a journal, skipping what this fidoctor cannot use (with a warning).

        Read through safeio (regular file, no symlink, size cap: a FIFO or a link
        to /dev/zero cannot hang history or undo). A line that is not a JSON
        object, or a record whose fields have the wrong type, is skipped and
        reported, so one odd line (or a newer fidoctor's record) never disables
        history and undo for every other fix. A torn *last* line is a crash
        mid-write: that record never happened, and it is skipped silently.
        """
        from fidoctor.safeio import JOURNAL_CAP, UnsafeFile, read_bytes

        j = cls(d)
        try:
            raw = read_bytes(j.path, JOURNAL_CAP, follow=False, what="journal")
        except UnsafeFile as e:
            if os.path.lexists(j.path):
                j.warnings.append(e.message)
            return j
        if raw.count(b"\n") > MAX_LINES:
            # no fix writes that many records (three a step): garbage, not a journal; reading
            # it line by line cost minutes and gigabytes (history hung on a 63 MiB one)
            j.warnings.append(f"{j.path}: more than {MAX_LINES} lines, not a journal fidoctor "
                              "wrote; not read")
            return j
        lines = raw.split(b"\n")
        skipped = 0
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            why = ""
            try:
                rec = json.loads(line)
            except (ValueError, RecursionError):
                if i == len(lines) - 1:
                    continue  # torn by a crash mid-write: that record never happened
                rec, why = None, "not JSON"
            if not why:
                why = _bad_record(rec)
            if why:
                skipped += 1
                if skipped <= MAX_WARNINGS:
                    j.warnings.append(f"{j.path}: line {i + 1} skipped ({why})")
                continue
            j.records.append(rec)
        if skipped > MAX_WARNINGS:
            j.warnings.append(f"{j.path}: {skipped - MAX_WARNINGS} more line(s) skipped")
        return j

    def append(self, rec: Dict[str, Any]) -> None:
        line = (json.dumps(rec, sort_keys=True) + "\n").encode()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
                     | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(f"{self.path} is not a regular file; fidoctor will not append to it")
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # close a line torn by a crash before appending
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.records.append(rec)

    # -- views -------------------------------------------------------------
    @property
    def header(self) -> Dict[str, Any]:
        return self.records[0] if self.records and self.records[0].get("op") == "begin" else {}

    @property
    def ending(self) -> Optional[str]:
        ends = [r["op"] for r in self.records if r.get("op") in ENDINGS]
        return ends[-1] if ends else None

    @property
    def status(self) -> str:
        """committed | undone | rolled-back | interrupted (no ending: crashed or killed) |
        damaged (no record could be read, yet something was left: see ``kept``)."""
        if not self.records:
            return "damaged"
        e = self.ending
        if e == "commit":
            return "committed"
        return e or "interrupted"

    def intents(self) -> Dict[int, Dict[str, Any]]:
        return {r["n"]: r["step"] for r in self.records if r.get("op") == "intent"}

    def done(self) -> Dict[int, Dict[str, Any]]:
        return {r["n"]: r for r in self.records if r.get("op") == "done"}

    def reverted(self) -> List[int]:
        return [r["n"] for r in self.records if r.get("op") == "reverted"]


def _bad_record(rec: Any) -> str:
    """Why ``rec`` cannot be used as a journal record ('' when it can)."""
    if not isinstance(rec, dict):
        return "not a JSON object"
    op = rec.get("op")
    if not isinstance(op, str):
        return "no op"
    if op in ("intent", "done", "reverted"):
        n = rec.get("n")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            return f"{op} without a step number"
    if op == "intent" and not isinstance(rec.get("step"), dict):
        return "intent without a step"
    if op == "begin" and not isinstance(rec.get("time", 0.0), (int, float)):
        return "begin with a bad time"
    return ""


def _kept(j: Journal) -> bool:
    """A journal worth listing: readable records, or lines that could not be read, or backups
    and removed files it left (a damaged journal must not hide the copies it kept)."""
    if j.records or j.warnings:
        return True
    for d in (j.backups, j.removed):
        try:
            if os.listdir(d):
                return True
        except OSError:
            continue
    return False  # a begin line torn by a crash and nothing kept: nothing happened


def all_journals(root: str) -> List[Journal]:
    """Every transaction under ``root``, oldest first."""
    try:
        names = sorted(n for n in os.listdir(root) if not n.startswith("."))
    except OSError:
        return []
    out = []
    for n in names:
        if not os.path.isdir(os.path.join(root, n)) or os.path.islink(os.path.join(root, n)):
            continue
        j = Journal.load(os.path.join(root, n))
        if _kept(j):
            out.append(j)
    # Two fixes in the same second: the begin record's clock orders them.
    out.sort(key=lambda j: (float(j.header.get("time") or 0.0), j.txid))
    return out
