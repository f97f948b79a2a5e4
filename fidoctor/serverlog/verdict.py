"""From scanned logs to findings: anchors before verdicts, causes before consequences.

Rules (issue 15):
- A hit counts only when it is anchored: its line names a FlashInfer path
  itself, or its log shows the JIT's build phase (see ``anchors``). A log with
  no anchor at all gets one info finding, ``log-no-jit-activity``, never an
  error, and says which lines looked like problems but are not JIT evidence.
- In a chained traceback the first exception that matched is the cause; a
  different id matched by a later exception of the same chain is reported as
  info with ``caused_by``.
- ``jit-build-failed`` (a failure without a known cause) is dropped when another
  error of the same log names the cause.
- One finding per id, whatever the number of ranks that printed it: evidence
  quotes the first lines (file, line number, text) and counts the rest.
- Builds: a finished build slower than ``SLOW_S`` is ``jit-build-slow`` (info, with
  its duration); a build the log never sees end is ``jit-log-unfinished``: a
  warning when the log shows a hang sign or runs ``STALL_S`` past its start,
  else info (it was still compiling when the log ends).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from fidoctor.flashinfer.modnames import short_name
from fidoctor.model import Finding, Fix
from fidoctor.serverlog.matchers import by_id

SLOW_S = 60.0
STALL_S = 600.0
MAX_QUOTES = 6
NO_ACTIVITY = "log-no-jit-activity"
SLOW = "jit-build-slow"
UNFINISHED = "jit-log-unfinished"


def fmt_s(s: float) -> str:
    s = float(s)
    if s < 90:
        return f"{s:.0f} s"
    m, sec = divmod(int(round(s)), 60)
    return f"{m} min {sec:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def _where(path: str, line: int, quote: str, stream: str = "") -> str:
    return f"{path}:{line}: {quote}"


def _consequences(result: Dict[str, Any]) -> Dict[int, str]:
    """Index of hits (in result["hits"]) that are consequences → the id of their cause."""
    by_chain: Dict[Tuple[str, int], List[Tuple[int, Dict[str, Any]]]] = {}
    for i, h in enumerate(result["hits"]):
        if h.get("chain"):
            by_chain.setdefault((h["stream"], h["chain"][0]), []).append((i, h))
    out: Dict[int, str] = {}
    for hits in by_chain.values():
        first = min(h["chain"][1] for _, h in hits)
        causes = [h["id"] for _, h in hits if h["chain"][1] == first]
        cause_ids = set(causes)
        for i, h in hits:
            if h["chain"][1] > first and h["id"] not in cause_ids:
                out[i] = causes[0]
    return out


def findings(results: List[Dict[str, Any]]) -> List[Finding]:
    """Findings of one or more scanned logs (``Scanner.close()`` results)."""
    groups: Dict[str, List[Tuple[Dict[str, Any], Dict[str, Any], Optional[str]]]] = {}
    dropped: List[Tuple[Dict[str, Any], Dict[str, Any]]] = []
    for r in results:
        conseq = _consequences(r)
        for i, h in enumerate(r["hits"]):
            if not (h.get("self_anchored") or r.get("anchor")):
                dropped.append((r, h))
                continue
            groups.setdefault(h["id"], []).append((r, h, conseq.get(i)))
    out: List[Finding] = []
    matchers = by_id()
    for fid, items in groups.items():
        m = matchers[fid]
        first_r, first, _ = items[0]
        all_conseq = all(c for _, _, c in items)
        causes = sorted({c for _, _, c in items if c})
        sev = "info" if all_conseq else m.severity
        title = m.title(first.get("detail") or {})
        if all_conseq:
            title += f" (a consequence of {causes[0]}, raised while handling it)"
        modules = sorted({h["module"] for _, h, _ in items if h.get("module")})
        streams = sorted({h["stream"] for _, h, _ in items if h.get("stream")})
        data: Dict[str, Any] = {
            "source": "log", "detail": first.get("detail") or {},
            "log": [{"file": r["path"], "line": h["line"], "text": h["quote"],
                     "stream": h.get("stream", "")} for r, h, _ in items[:MAX_QUOTES]],
            "modules": modules, "streams": streams,
            "count": sum(r.get("hit_counts", {}).get(fid, 0) for r in _unique(items)),
        }
        if modules:
            data["module"] = modules[0]
        data["affects"] = modules or ["*"]  # the cause→symptom linker reads this (causes.py)
        out.append(Finding(fid, sev, title, _evidence(items), m.fixes(first.get("detail") or {}),
                           subject=modules[0] if len(modules) == 1 else "", data=data,
                           caused_by=causes[0] if all_conseq else None))
    errors_by_file = {r["path"] for r in results for h in r["hits"]
                      if h["id"] != "jit-build-failed" and (h.get("self_anchored") or r.get("anchor"))
                      and matchers[h["id"]].severity == "error"}
    out = [f for f in out if not (f.id == "jit-build-failed" and
                                  {e["file"] for e in f.data["log"]} <= errors_by_file)]
    out += _build_findings(results, out)
    # a file that is no text (binary, another compressor, NULs) shows nothing either way: it is
    # reported as not read (merge.log_gaps), never as a log without JIT activity
    texts = [r for r in results if not r.get("not_text") or r.get("anchor") or r.get("hits")]
    if texts and not any(r.get("anchor") for r in results) and not any(f.is_problem for f in out):
        out.append(_no_activity(texts, dropped))
    return out


def _unique(items) -> List[Dict[str, Any]]:
    seen, out = set(), []
    for r, _, _ in items:
        if id(r) not in seen:
            seen.add(id(r))
            out.append(r)
    return out


def _evidence(items) -> List[str]:
    ev: List[str] = []
    seen_quotes = set()
    shown = 0
    for r, h, _ in items:
        # the same message from another rank is counted, not quoted again
        key = (tuple(sorted((h.get("detail") or {}).items())), h.get("module", ""))
        if shown >= MAX_QUOTES or key in seen_quotes:
            continue
        seen_quotes.add(key)
        shown += 1
        ev.append(_where(r["path"], h["line"], h["quote"]))
        for line, quote in h.get("extra") or []:
            ev.append(_where(r["path"], line, quote))
    total = sum(r.get("hit_counts", {}).get(items[0][1]["id"], 0) for r in _unique(items))
    streams = sorted({h["stream"] for _, h, _ in items if h.get("stream")})
    if total > shown or len(streams) > 1:
        more = f"{total} matching line(s) in all"
        if len(streams) > 1:
            more += f", from {len(streams)} streams ({', '.join(streams[:6])}" + \
                    (", …)" if len(streams) > 6 else ")")
        ev.append(more)
    return ev


def _build_findings(results: List[Dict[str, Any]], found: List[Finding]) -> List[Finding]:
    out: List[Finding] = []
    problem_modules = {f.data.get("module") for f in found if f.is_problem}
    for r in results:
        last_ts_span = r.get("span_s")
        for b in r.get("builds") or []:
            mod = b.get("module") or "?"
            if b.get("outcome") == "finished" and (b.get("seconds") or 0) >= SLOW_S:
                how = "" if b.get("explicit_end") else " (end inferred from the next line it logged)"
                ev = [_where(r["path"], b["start_line"], b.get("start_text", ""))]
                if b.get("end_text"):
                    ev.append(_where(r["path"], b["end_line"], b["end_text"]))
                out.append(Finding(
                    SLOW, "info",
                    f"{short_name(mod)} compiled in {fmt_s(b['seconds'])}{how}: a slow cold build "
                    "that finished, not a hang",
                    ev, [Fix("Nothing is wrong; to skip the wait on the next start, build once ahead "
                             "of time", ["fidoctor warmup --python <serving venv>/bin/python"])],
                    subject=mod, data={"source": "log", "module": mod, "seconds": b["seconds"],
                                       "log": [{"file": r["path"], "line": b["start_line"],
                                                "text": b.get("start_text", "")}]}))
            elif b.get("outcome") == "open" and mod not in problem_modules:
                hang = [s for s in r.get("hang_signs") or [] if s["line"] > b["start_line"]]
                open_for = b.get("open_for_s")
                stalled = bool(hang) or (open_for or 0) >= STALL_S
                ev = [_where(r["path"], b["start_line"], b.get("start_text", ""))]
                ev += [_where(r["path"], s["line"], s["text"]) for s in hang[:2]]
                when = f" {fmt_s(open_for)} after it started" if open_for else ""
                title = (f"{short_name(mod)} started compiling and the log never shows it finish"
                         + (f"; it ends{when}" if when else "")
                         + ("; the server timed out meanwhile" if hang else ""))
                if not stalled:
                    title = (f"{short_name(mod)} was still compiling when the log ends{when}: "
                             "a cold build in progress, not evidence of a hang")
                out.append(Finding(
                    UNFINISHED, "warning" if stalled else "info", title, ev,
                    [Fix("On the machine, see whether the build still runs, is stuck or waits for a "
                         "lock", ["fidoctor diagnose --pid <server pid>"])],
                    subject=mod, data={"source": "log", "module": mod, "open_for_s": open_for,
                                       "log_span_s": last_ts_span,
                                       "log": [{"file": r["path"], "line": b["start_line"],
                                                "text": b.get("start_text", "")}]}))
    return out


def _no_activity(results: List[Dict[str, Any]], dropped) -> Finding:
    ev = []
    for r in results:
        n = r.get("flashinfer_mentions", 0)
        fm = r.get("first_mention")
        ev.append(f"{r['path']}: {r['lines']} line(s), no build-phase anchor (cached_ops, "
                  f"build.ninja, ninja/nvcc lines, 'Building JIT module', JIT lock frames); "
                  f"{n} line(s) mention flashinfer"
                  + (f", first at line {fm['line']}" if fm else ""))
    for r, h in dropped[:4]:
        ev.append(f"{r['path']}:{h['line']}: looks like {h['id']} but is not tied to a JIT build: "
                  f"{h['quote']}")
    return Finding(NO_ACTIVITY, "info", "no FlashInfer JIT activity in this log", ev,
                   [Fix("If the server hung or failed, the cause is elsewhere (an inference error, "
                        "NCCL, memory): the log shows no JIT build")],
                   data={"source": "log", "files": [r["path"] for r in results],
                         "not_jit": [{"file": r["path"], "line": h["line"], "id": h["id"],
                                      "text": h["quote"]} for r, h in dropped[:20]]})
