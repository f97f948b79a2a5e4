"""The Markdown report: what a maintainer reads in 30 seconds, then replays.

Order is the point: a one-paragraph verdict, then findings (errors first) with
their fix commands, then a compact version table; evidence, log excerpts,
processes and the environment sit in collapsed ``<details>`` blocks, trimmed
to the lines that matter. GitHub-flavoured Markdown only (tables, fenced
code, ``<details>``), and every value that came from the machine is escaped,
so a path like ``<home-1>/x_y`` renders as written, not as an HTML tag.
"""

from __future__ import annotations

import re
import time
from typing import Any, Callable, Dict, Iterable, List, Optional

from fidoctor import __version__
from fidoctor.causes import causal_order
from fidoctor.diagnosis import Diagnosis, target_summary
from fidoctor.findingdocs import doc_ref
from fidoctor.model import SEVERITIES, Finding
from fidoctor.report import versions
from fidoctor.textsafe import shown as visible

# Within one severity, root causes come before the symptoms they produce: a missing
# cudart symbol explains an unfinished log line, not the other way round.
CAUSE_RANK = {"cudart-missing-symbol": 0, "cuda-toolkit-unusable": 1, "cuda-version-skew": 2}
SYMPTOM_RANK = {"cache-incomplete-module": 8, "jit-log-unfinished": 9}
MAX_FULL_FINDINGS = 20  # GitHub comments stop at 65,536 characters
MAX_EVIDENCE = 12
MAX_LOG_LINES = 12
MAX_PROCS = 15
_MD_SPECIAL = re.compile(r"([\\`*\[\]<>|#!~])")
_LONE_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def esc(s: Any) -> str:
    """Escape machine text for Markdown prose and table cells (one line)."""
    s = " ".join(visible(str(s)).split())
    s = s.replace("&", "&amp;")
    s = _MD_SPECIAL.sub(r"\\\1", s)
    return _LONE_UNDERSCORE.sub(r"\\_", s)


def code(s: Any) -> str:
    """An inline code span that survives backticks and pipes inside ``s``."""
    s = " ".join(visible(str(s)).split()).replace("|", "\\|")
    if not s:
        return ""
    run = max((len(m) for m in re.findall(r"`+", s)), default=0)
    fence = "`" * (run + 1)
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def html(s: Any) -> str:
    return visible(str(s)).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def fenced(lines: Iterable[str], lang: str = "") -> List[str]:
    body = [visible(str(ln)) for ln in lines]
    run = max((len(m) for ln in body for m in re.findall(r"`{3,}", ln)), default=2)
    fence = "`" * max(3, run + 1)
    return [fence + lang, *body, fence]


def details(summary: str, body: List[str]) -> List[str]:
    """A collapsed block; ``summary`` is plain text (HTML-escaped here)."""
    return ["<details>", f"<summary>{html(summary)}</summary>", "", *body, "", "</details>", ""]


def ordered(findings: List[Finding]) -> List[Finding]:
    """Errors first; within a severity, known causes before symptoms, then by id; each
    symptom with a ``caused_by`` right after its cause (fidoctor.causes)."""
    return causal_order(sorted(findings, key=lambda f: (
        SEVERITIES.index(f.severity), CAUSE_RANK.get(f.id, SYMPTOM_RANK.get(f.id, 5)),
        f.id, f.subject)))


def plural(n: int, word: str) -> str:
    if n == 1:
        return f"{n} {word}"
    return f"{n} {word}" + ("es" if word.endswith(("s", "x", "sh", "ch")) else "s")


# -- sections -----------------------------------------------------------------------------


def verdict(diag: Diagnosis) -> List[str]:
    c = diag.counts()
    t = target_summary(diag.snapshot)
    who = f"Python {esc(t['python_version'])}" if t["python_version"] else \
        "the target interpreter"
    stack = [f"torch {esc(t['torch'])}" if t["torch"] else "",
             f"flashinfer-python {esc(t['flashinfer'])}" if t["flashinfer"] else ""]
    stack_s = ", ".join(s for s in stack if s) or "no torch/flashinfer found"
    target = f"Target: {who} ({stack_s}) at {code(t['python'])}."
    if not t["python"]:  # --log-only without --from: no machine was looked at
        target = "Target: this machine was not looked at (--log-only: the logs alone)."
    problems = [f for f in ordered(diag.findings) if f.is_problem]
    if not problems and diag.unchecked:
        head = "**Verdict: not checked.**"
        body = f"The JIT could not be checked: {esc(diag.unchecked)}."
    elif not problems:
        head = "**Verdict: no problems found.**"
        body = ("No error or warning findings"
                + (f"; {plural(c['info'], 'info note')} below." if c["info"] else "."))
    else:
        top = problems[0]
        head = (f"**Verdict: {plural(c['error'], 'error')}, "
                f"{plural(c['warning'], 'warning')}.**")
        body = f"The most likely cause is {code(top.id)}: {esc(top.title)}."
        first = _first_command(top)
        if first:
            body += f" Start with {code(first)} (fix graded *{top.fixes[0].safety}*)."
        others = sorted({f.id for f in problems[1:]} - {top.id})
        if others:
            body += " Also: " + ", ".join(code(i) for i in others) + "."
    gaps = len(diag.inconclusive) + sum(1 for s in diag.snapshot.sections.values() if not s.ok)
    tail = f" {plural(gaps, 'check')} could not run (see *Not checked*)." if gaps else ""
    return [f"{head} {body} {target}{tail}", ""]


def _first_command(f: Finding) -> str:
    for fix in f.fixes:
        for c in fix.commands:
            if not c.lstrip().startswith("#"):
                return c
    return ""


def fix_lines(label: str, fix) -> List[str]:
    out = [f"{label} ({esc(fix.safety)}): {esc(fix.description)}", ""]
    if fix.commands:
        out += fenced(fix.commands, "sh") + [""]
    return out


def finding_block(n: int, f: Finding) -> List[str]:
    out = [f"### {n}. {f.severity.upper()} {code(f.id)}", "", f"**{esc(f.title)}**", ""]
    if f.subject:
        out += [f"Subject: {code(f.subject)}", ""]
    if f.caused_by:
        out += [f"Caused by {code(f.caused_by)} (fix that first).", ""]
    out += [f"What it means: {code('fidoctor explain ' + f.id)} "
            f"({code(doc_ref(f.id))} in fidoctor's source).", ""]
    if f.fixes:
        out += fix_lines("Fix", f.fixes[0])
    if len(f.fixes) > 1:
        alt: List[str] = []
        for i, fix in enumerate(f.fixes[1:], 1):
            alt += fix_lines(f"Alternative {i}", fix)
        grades = ", ".join(fix.safety for fix in f.fixes[1:])
        out += details(f"Other fixes ({len(f.fixes) - 1}: {grades})", alt[:-1])
    if f.evidence:
        items = [f"- {esc(e)}" for e in f.evidence[:MAX_EVIDENCE]]
        if len(f.evidence) > MAX_EVIDENCE:
            items.append(f"- … {len(f.evidence) - MAX_EVIDENCE} more in the snapshot")
        out += details(f"Evidence ({len(f.evidence)})", items)
    return out


def findings_section(diag: Diagnosis) -> List[str]:
    out = ["## Findings", ""]
    if not diag.findings:
        return out + ["None.", ""]
    shown = ordered(diag.findings)
    for n, f in enumerate(shown[:MAX_FULL_FINDINGS], 1):
        out += finding_block(n, f)
    rest = shown[MAX_FULL_FINDINGS:]
    if rest:
        rows = ["| # | severity | id | subject |", "|---|---|---|---|"]
        rows += [f"| {n} | {f.severity} | {code(f.id)} | {code(f.subject)} |"
                 for n, f in enumerate(rest, MAX_FULL_FINDINGS + 1)]
        out += details(f"{len(rest)} more findings (full evidence and fixes: fidoctor diagnose "
                       "--from the snapshot)", rows)
    return out


def detail_cell(detail: str) -> str:
    """A path as code, anything after it (`` (from which nvcc)``) as prose."""
    m = re.match(r"^([/<]\S*)( \(.*\))?$", detail or "")
    if not m:
        return esc(detail)
    return code(m.group(1)) + (" " + esc(m.group(2)) if m.group(2) else "")


def versions_section(snap) -> List[str]:
    rows = versions.rows(snap)
    out = ["## Versions", "", "| component | version | details |", "|---|---|---|"]
    for name, ver, detail in rows:
        out.append(f"| {esc(name)} | {esc(ver) if ver else '—'} | {detail_cell(detail)} |")
    return out + [""]


def not_checked_section(diag: Diagnosis) -> List[str]:
    items = [f"- {code(n)} not gathered: {esc(s.status)}{': ' + esc(s.error) if s.error else ''}"
             for n, s in diag.snapshot.sections.items() if not s.ok]
    items += [f"- {code(i.probe)} inconclusive: {esc(i.reason)}" for i in diag.inconclusive]
    return ["## Not checked", "", *items, ""] if items else []


def log_excerpts(diag: Diagnosis) -> List[str]:
    """Only the lines that matter: those of modules a finding names, else the latest."""
    named = {str(f.data.get("module")) for f in diag.findings if f.data.get("module")}
    out: List[str] = []
    for log in diag.snapshot.data("jitlog").get("logs", []):
        events = []
        for name, m in (log.get("modules") or {}).items():
            for key in ("last_start", "last_finish"):
                ev = m.get(key)
                if ev and ev.get("line"):
                    events.append((ev.get("offset", 0), name, ev["line"].rstrip()))
        events.sort()
        unfinished = {n for n, m in (log.get("modules") or {}).items()
                      if m.get("last_start") and (not m.get("last_finish") or
                                                  m["last_finish"].get("offset", 0)
                                                  < m["last_start"].get("offset", 0))}
        keep = ([e for e in events if e[1] in named]
                or [e for e in events if e[1] in unfinished]
                or events[-MAX_LOG_LINES // 2:])
        keep = keep[-MAX_LOG_LINES:]
        if not keep and not log.get("error"):
            continue
        lines = [f"# {len(keep)} of {log.get('events', len(events))} JIT events; "
                 f"{log.get('lines', '?')} lines, format {log.get('format', '?')}"
                 + ("" if log.get("complete", True) else f"; read {log.get('bytes_read')} bytes only")]
        if log.get("error"):
            lines.append(f"# could not read: {log['error']}")
        lines += [e[2] for e in keep]
        out += details(f"JIT log {log.get('path')}", fenced(lines, "text"))
    return out


def process_excerpt(snap) -> List[str]:
    procs = snap.data("processes").get("processes", [])
    if not procs:
        return []
    rows = ["| pid | ppid | name | state | cpu s | module |", "|---|---|---|---|---|---|"]
    for p in procs[:MAX_PROCS]:
        rows.append(f"| {p.get('pid')} | {p.get('ppid', '')} | {esc(p.get('name', '?'))} | "
                    f"{esc(p.get('state', '?'))} | {p.get('cpu_s', '')} | "
                    f"{code(p['module']) if p.get('module') else ''} |")
    if len(procs) > MAX_PROCS:
        rows.append(f"| … | | {len(procs) - MAX_PROCS} more | | | |")
    return details(f"Build processes ({len(procs)})", rows)


def cache_excerpt(snap) -> List[str]:
    cache = snap.data("cache")
    wss = cache.get("workspaces") or []
    if not wss:
        return []
    rows = ["| workspace | modules | locks | log |", "|---|---|---|---|"]
    for ws in wss:
        rows.append(f"| {code(ws.get('path'))} | {len(ws.get('modules') or [])} | "
                    f"{len(ws.get('locks') or [])} | {'yes' if ws.get('log') else 'no'} |")
    return details(f"FlashInfer cache {cache.get('root')}", rows)


def env_excerpt(snap) -> List[str]:
    env = snap.context.get("env") or {}
    if not env:
        return []
    rows = ["| variable | value |", "|---|---|"]
    rows += [f"| {code(k)} | {code(v) if v else '(empty)'} |" for k, v in sorted(env.items())]
    return details(f"Environment of the target ({len(env)} recorded variables)", rows)


def footer(diag: Diagnosis, redaction: Optional[Dict[str, int]], snapshot_name: Optional[str]
           ) -> List[str]:
    taken = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(diag.snapshot.taken_at))
    bits = [f"fidoctor {__version__}", f"snapshot taken {taken}"]
    if redaction is None:
        bits.append("**not redacted**")
    elif redaction:
        words = ", ".join(plural(n, {"user": "user name", "home": "home dir", "host": "host name",
                                     "ip": "IP address", "mac": "MAC address",
                                     "secret": "secret"}[k]) for k, n in redaction.items())
        bits.append(f"redacted: {words} (same value, same placeholder)")
    else:
        bits.append("redacted: nothing private found")
    lines = ["---", "", "<sub>" + html(" · ".join(b.replace("**", "") for b in bits)) + "</sub>", ""]
    if snapshot_name:
        lines[2:2] = [f"Replay: attach {code(snapshot_name)} and run "
                      f"{code('fidoctor diagnose --from ' + snapshot_name)}.", ""]
    return lines


def _safe(what: str, fn: Callable[..., List[str]], arg: Any) -> List[str]:
    """Optional parts read snapshot data of any shape (hand-edited, older, damaged):
    a part that cannot be rendered says so in one line instead of sinking the report."""
    try:
        return fn(arg)
    except (AttributeError, KeyError, TypeError, ValueError, IndexError) as e:
        return [f"*{esc(what)} not shown: the snapshot's data has an unexpected shape "
                f"({esc(type(e).__name__)}: {esc(str(e)[:120])})*", ""]


def how_run(diag: Diagnosis, command: Optional[str]) -> List[str]:
    """The command that made the report and how its target was chosen: a maintainer must
    tell ``--pid`` (a live server's environment) from ``--python`` or fidoctor's own
    interpreter (perhaps the wrong patient) before reading any finding."""
    ctx = diag.snapshot.context
    how = ctx.get("python_source") if isinstance(ctx, dict) else None
    bits = []
    if command:
        bits.append(f"Run as {code(command)}.")
    if how:
        bits.append(f"Target chosen by: {esc(how)}.")
    return [" ".join(bits), ""] if bits else []


def render(diag: Diagnosis, redaction: Optional[Dict[str, int]] = None,
           snapshot_name: Optional[str] = None, command: Optional[str] = None) -> str:
    """The whole report. ``redaction`` is the redactor's summary (None: not redacted);
    ``command`` the fidoctor command line that made it."""
    c = diag.counts()
    state = "healthy" if diag.exit_code == 0 else "not checked" if diag.exit_code == 2 else \
        f"{plural(c['error'], 'error')}, {plural(c['warning'], 'warning')}"
    lines = [f"# fidoctor report: FlashInfer JIT ({state})", ""]
    lines += verdict(diag)
    lines += _safe("command line", lambda d: how_run(d, command), diag)
    lines += findings_section(diag)
    lines += _safe("version table", versions_section, diag.snapshot)
    lines += not_checked_section(diag)
    from fidoctor.report.serverlog import collect_env_excerpt, server_log_excerpt

    extra = (_safe("server log excerpt", server_log_excerpt, diag)
             + _safe("JIT log excerpt", log_excerpts, diag)
             + _safe("process table", process_excerpt, diag.snapshot)
             + _safe("cache summary", cache_excerpt, diag.snapshot)
             + _safe("environment", env_excerpt, diag.snapshot)
             + _safe("FlashInfer collect-env", collect_env_excerpt, diag.snapshot))
    if extra:
        lines += ["## Evidence", ""] + extra
    lines += footer(diag, redaction, snapshot_name)
    return "\n".join(lines).rstrip() + "\n"
