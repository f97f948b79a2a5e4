"""Read the fleet's reports: files, directories, or JSON lines on stdin, under budgets.

Each input is one node: a ``diagnose --json`` output (judged as it says) or a
snapshot (replayed through the probes here), or a line
``{"node": NAME, "unreachable": REASON}`` written by a collector for a node
that did not answer. A report that cannot be read is listed as unreachable
with the reason, never fatal: one broken node must not hide the other 63.
Only a command line with nothing readable at all is an error (exit 2).

Budgets: every file through ``fidoctor.safeio`` (regular files only, a size
cap per file, a JSON nesting cap), directories read one level deep (files
ending .json/.jsonl/.ndjson), at most MAX_REPORTS reports and MAX_TOTAL
bytes, stdin read against a deadline.
"""

from __future__ import annotations

import json
import os
import re
import select
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple

from fidoctor.errors import FidoctorError
from fidoctor.safeio import MAX_DEPTH, MiB, UnsafeFile, _depth_exceeds, loads_json, read_bytes

FILE_CAP = 256 * MiB
LINE_CAP = 64 * MiB
MAX_TOTAL = 4096 * MiB
MAX_REPORTS = 100_000
SUFFIXES = (".json", ".jsonl", ".ndjson")
_PLACEHOLDER = re.compile(r"<(host|user|home|ip|secret|path)-\d+>")


@dataclass
class Node:
    """One node's verdict, as the fleet sees it."""

    name: str
    named_by: str  # "hostname", "file" (the report's hostname is missing or redacted), "line"
    source: str
    kind: str  # "diagnose" or "snapshot"
    status: str  # "healthy", "problems", "unchecked"
    verdict: str
    problems: List[Tuple[str, str, str]] = field(default_factory=list)  # (id, subject, severity)
    facts: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Unreachable:
    name: str
    reason: str
    source: str


@dataclass
class Loaded:
    nodes: List[Node] = field(default_factory=list)
    unreachable: List[Unreachable] = field(default_factory=list)


def normalise(subject: str, root: Optional[str], home: Optional[str], host: Optional[str]) -> str:
    """A finding's subject with what differs per node for the same fault taken out."""
    s = _PLACEHOLDER.sub(lambda m: f"<{m.group(1)}>", subject or "")
    if root and len(root) > 1 and s.startswith(root.rstrip("/")):
        s = "<root>" + s[len(root.rstrip("/")):]
    if home and len(home) > 1 and s.startswith(home.rstrip("/") + "/"):
        s = "~" + s[len(home.rstrip("/")):]
    if host and len(host) > 1:
        s = s.replace(host, "<host>")
    return re.sub(r"(/proc/|pid )\d+", r"\1<pid>", s)


def _obj(v: Any) -> Dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _from_diagnose(d: Dict[str, Any]) -> Tuple[str, List[Tuple[str, str, str]], str, Dict]:
    summary: Dict[str, Any] = _obj(d.get("summary"))
    node: Dict[str, Any] = _obj(d.get("node"))
    target: Dict[str, Any] = _obj(d.get("target"))
    root = target.get("flashinfer_root") or _obj(node.get("cache")).get("root")
    host = node.get("hostname")
    out = []
    for f in d.get("findings") or []:
        if not isinstance(f, dict) or f.get("severity") not in ("error", "warning"):
            continue
        out.append((str(f.get("id")), normalise(str(f.get("subject") or ""), root, None, host),
                    str(f.get("severity"))))
    code = summary.get("exit_code")
    if code == 1:
        status = "problems"
    elif code == 0:
        status = "healthy"
    else:
        status = "unchecked"
    verdict = str(summary.get("verdict") or status)
    return status, out, verdict, node


def _from_snapshot(d: Dict[str, Any]) -> Tuple[str, List[Tuple[str, str, str]], str, Dict]:
    from fidoctor.diagnosis import diagnose
    from fidoctor.fleet.facts import node_facts
    from fidoctor.snapshot import Snapshot

    snap = Snapshot.from_dict(d)
    diag = diagnose(snap)
    facts = node_facts(snap)
    env = _obj(snap.context.get("env"))
    root, host = snap.context.get("flashinfer_root"), facts.get("hostname")
    probs = [(f.id, normalise(f.subject, root, env.get("HOME"), host), f.severity)
             for f in diag.findings if f.is_problem]
    code = diag.exit_code
    status = "problems" if code == 1 else "healthy" if code == 0 else "unchecked"
    return status, probs, diag.verdict, facts


def judge(obj: Any, source: str, default_name: str, loaded: Loaded) -> None:
    """Turn one parsed report into a Node (or an Unreachable entry)."""
    if not isinstance(obj, dict):
        loaded.unreachable.append(Unreachable(default_name, "not a JSON object", source))
        return
    if "unreachable" in obj:
        node = obj.get("node")
        name = node if isinstance(node, str) else default_name
        loaded.unreachable.append(Unreachable(name[:200], str(obj["unreachable"])[:300], source))
        return
    try:
        if isinstance(obj.get("sections"), dict) and isinstance(obj.get("context"), dict):
            kind = "snapshot"
            status, probs, verdict, facts = _from_snapshot(obj)
        elif isinstance(obj.get("findings"), list) and isinstance(obj.get("summary"), dict):
            kind = "diagnose"
            status, probs, verdict, facts = _from_diagnose(obj)
        else:
            raise FidoctorError("neither a diagnose --json output nor a snapshot")
    except FidoctorError as e:
        loaded.unreachable.append(Unreachable(default_name, f"unreadable report: {e.message}",
                                              source))
        return
    host = facts.get("hostname") if isinstance(facts.get("hostname"), str) else None
    if host and not _PLACEHOLDER.fullmatch(host):
        name, by = host, "hostname"
    else:
        name, by = default_name, "line" if source.startswith("stdin") else "file"
    loaded.nodes.append(Node(name, by, source, kind, status, verdict, sorted(set(probs)), facts))


_SPACE = re.compile(r"\s*")


def _documents(data: bytes) -> Iterator[Tuple[int, Any, str]]:
    """Every JSON value in ``data`` as (its first line, the value or None, why not), whether
    one per line (JSON lines) or pretty-printed one after another (``cat reports/*.json``,
    each a ``diagnose --json``): split by the decoder, not by newlines. A value that does
    not parse costs its line only: reading goes on at the next one."""
    text = data.decode("utf-8", "replace")
    dec = json.JSONDecoder()
    pos, line = 0, 1
    while True:
        gap = _SPACE.match(text, pos)  # \s* always matches; mypy cannot know
        start = gap.end() if gap else pos
        line += text.count("\n", pos, start)
        if start >= len(text):
            return
        eol = text.find("\n", start)
        eol = len(text) if eol < 0 else eol
        try:
            obj, end = dec.raw_decode(text, start)
        except RecursionError:
            obj, end, why = None, -1, "nests too deep; not fidoctor's JSON"
        except ValueError as e:
            obj, end, why = None, -1, f"is not JSON ({str(e)[:200]})"
        if end >= 0:
            chunk = text[start:end].encode("utf-8", "replace")
            why = ""
            if len(chunk) > LINE_CAP:
                obj, why = None, f"longer than {LINE_CAP} bytes"
            elif _depth_exceeds(chunk, MAX_DEPTH):
                obj, why = None, f"nests deeper than {MAX_DEPTH} levels; not fidoctor's JSON"
        yield line, obj, why
        nxt = end if end >= 0 else eol
        line += text.count("\n", start, nxt)
        pos = nxt


def _parse_into(data: bytes, source: str, name: str, as_lines: bool, loaded: Loaded) -> None:
    if not as_lines:
        try:
            judge(loads_json(data, source, noun="JSON"), source, name, loaded)
            return
        except UnsafeFile as e:
            if data.count(b"\n{") == 0 and data.count(b"}{") == 0:
                loaded.unreachable.append(Unreachable(name, f"unreadable report: {e.message}",
                                                      source))
                return
    for n, obj, why in _documents(data):
        where = f"{source}:{n}"
        label = f"{name}:{n}" if name != "stdin" else f"stdin:{n}"
        if why:
            loaded.unreachable.append(Unreachable(label, f"unreadable report: {where} {why}",
                                                  where))
            continue
        judge(obj, where, label, loaded)


def _file_name(path: str) -> str:
    base = os.path.basename(path.rstrip("/"))
    for suf in SUFFIXES:
        if base.endswith(suf):
            return base[: -len(suf)]
    return base


def read_stdin(deadline_s: float, cap: int = MAX_TOTAL) -> bytes:
    """All of stdin, stopping at ``deadline_s`` (a pipe that stays open) or ``cap`` bytes."""
    fd = sys.stdin.fileno()
    if os.isatty(fd):
        raise FidoctorError("fleet - reads reports from a pipe, not a terminal",
                            "pipe reports in: cat reports/*.json | fidoctor fleet -")
    parts: List[bytes] = []
    got, end = 0, time.monotonic() + deadline_s
    while got <= cap:
        left = end - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        b = os.read(fd, 1 << 20)
        if not b:
            break
        parts.append(b)
        got += len(b)
    return b"".join(parts)


def load(inputs: List[str], stdin_timeout: float = 60.0) -> Loaded:
    """Read every input (see the module docstring); exit 2 only when nothing is readable."""
    loaded = Loaded()
    if not inputs:
        raise FidoctorError("fleet needs reports: files, directories, or - for stdin",
                            "fidoctor fleet reports/   (one diagnose --json per node)")
    total = 0
    for arg in inputs:
        if arg == "-":
            data = read_stdin(stdin_timeout)
            total += len(data)
            _parse_into(data, "stdin", "stdin", True, loaded)
            continue
        if os.path.isdir(arg):
            try:
                names = sorted(os.listdir(arg))
            except OSError as e:
                raise FidoctorError(f"cannot list {arg}: {e.strerror}") from None
            files = [os.path.join(arg, n) for n in names if n.endswith(SUFFIXES)
                     and not n.startswith(".")]
            if not files:
                raise FidoctorError(f"{arg} holds no reports (*.json, *.jsonl, *.ndjson)")
        elif os.path.lexists(arg):
            files = [arg]
        else:
            raise FidoctorError(f"{arg}: no such file or directory")
        for path in files:
            if len(loaded.nodes) + len(loaded.unreachable) >= MAX_REPORTS:
                raise FidoctorError(f"more than {MAX_REPORTS} reports; fleet stops there")
            try:
                data = read_bytes(path, FILE_CAP, what="report")
            except UnsafeFile as e:
                loaded.unreachable.append(Unreachable(_file_name(path), e.message, path))
                continue
            total += len(data)
            if total > MAX_TOTAL:
                raise FidoctorError(f"the reports add up to more than {MAX_TOTAL >> 20} MiB; "
                                    "fleet stops there", "aggregate fewer nodes at a time")
            _parse_into(data, path, _file_name(path), path.endswith((".jsonl", ".ndjson")),
                        loaded)
    _dedupe(loaded)
    return loaded


def _dedupe(loaded: Loaded) -> None:
    """Two reports that carry one name (collected twice, or cloned VMs) keep both, told apart."""
    seen: Dict[str, int] = {}
    for n in loaded.nodes:
        k = seen.get(n.name, 0)
        seen[n.name] = k + 1
        if k:
            n.name = f"{n.name}#{k + 1}"
