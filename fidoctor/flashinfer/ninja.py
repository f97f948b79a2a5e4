"""FlashInfer's ``build.ninja`` as data, and ninja's own verdict on what it would rebuild.

Why: the next start's cost is decided by two things fidoctor can read without
building anything: the variables FlashInfer wrote (``cuda_home``, flags,
``-gencode``) and what ``ninja -n -d explain`` says about them. A changed
``cuda_home`` string (``/usr/local/cuda`` vs ``/usr/local/cuda-13.0``) or a
changed flag rewrites ``build.ninja`` and ninja recompiles every object of the
module (flashinfer-jit.md §3, failure mode 6).

``parse`` reads the text only. ``explain`` runs the real ninja in dry-run mode
(``-n``: it reads ``.ninja_log``/``.ninja_deps`` and stats files, it runs no
command and writes no log) through ``fidoctor.proc`` with a deadline, and
caches each answer in fidoctor's cache dir keyed by the fingerprints (device,
inode, size, mtime) of ``build.ninja``, ``.ninja_log`` and ``.ninja_deps``
plus the exact text ninja was given, so a warm diagnose costs no subprocess.
Callers add an ``extra`` key for inputs the fingerprints cannot see (an
installed FlashInfer's sources, whose mtimes ninja compares).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence, TypedDict

from fidoctor import proc
from fidoctor.fsutil import read_head
from fidoctor.paths import cache_dir

MAX_BYTES = 4 << 20
CACHE_FILE = "ninja-explain-v1.json"
CACHE_MAX_ENTRIES = 1000  # diagnose asks about ≤ 5 modules a run
FLAG_VARS = ("cflags", "post_cflags", "cuda_cflags", "cuda_post_cflags", "ldflags",
             "common_cflags")
_VAR = re.compile(r"^([A-Za-z0-9_.\-]+)\s*=\s?(.*)$")
_REF = re.compile(r"\$\{([A-Za-z0-9_.\-]+)\}|\$([A-Za-z0-9_\-]+)")
_GENCODE = re.compile(
    r"(?:-gencode[= ]|--generate-code[= ])\s*['\"]?arch=(compute_[0-9a-z]+),\s*code=\[?([a-z0-9_,]+)\]?")
_PROGRESS = re.compile(r"^\[(\d+)/(\d+)\]")
_EXPLAIN = re.compile(r"^ninja explain: (.*)$")
REASONS = (  # (kind, pattern) in ninja 1.10–1.13's wording
    ("command-changed", re.compile(r"^command line changed for (.*)$")),
    ("no-log-entry", re.compile(r"^command line not found in log for (.*)$")),
    ("missing-output", re.compile(r"^output (.*) doesn't exist$")),
    ("older-than-input", re.compile(r"^(?:recorded mtime of |output )(.*?) older than most "
                                    r"recent input (\S+)")),
    ("deps-missing", re.compile(r"^deps for '?(.*?)'? are missing")),
    ("dirty", re.compile(r"^(.*) is dirty$")),
)


class Gencode(TypedDict):
    arch: str   # compute_90a
    code: str   # sm_90a (or "compute_90a,sm_90a")


class Edge(TypedDict):
    rule: str
    outputs: List[str]
    inputs: List[str]


class NinjaFile(TypedDict, total=False):
    """One parsed ``build.ninja``. Never renamed; add fields, don't repurpose them.

    ``variables``: top-level ``name = value`` lines as written (unexpanded);
    ``cuda_home``: its value, or for torch-written files (0.2.0–0.2.5) the dir
    above ``bin/nvcc`` in ``nvcc =``, else None; ``flags``: each of FLAG_VARS,
    expanded against earlier variables and split like a shell; ``gencode``:
    every distinct ``-gencode``/``--generate-code`` pair in them; ``edges``:
    the build statements; ``rules``: edges per rule name.
    """

    variables: Dict[str, str]
    cuda_home: Optional[str]
    flags: Dict[str, List[str]]
    gencode: List[Gencode]
    edges: List[Edge]
    rules: Dict[str, int]
    truncated: bool


class Explain(TypedDict, total=False):
    """What ``ninja -n -d explain`` said about one module. Never renamed.

    status: ok | timeout | error | no-ninja | no-build-file | skipped (budget); ``work``: edges it
    would run (0: up to date); ``reasons``: count per kind (see REASONS, plus
    ``other``); ``first``: the first explanation lines, verbatim; ``argv``: the
    command, for evidence; ``elapsed_s``; ``cached``: answered from the cache.
    """

    module_dir: str
    status: str
    work: int
    reasons: Dict[str, int]
    first: List[str]
    argv: List[str]
    error: str
    elapsed_s: float
    cached: bool


def _logical_lines(text: str) -> List[str]:
    """Lines with ``$``-newline continuations joined, as ninja reads them."""
    out: List[str] = []
    buf = ""
    for raw in text.splitlines():
        stripped = raw.rstrip("\r")
        trailing = len(stripped) - len(stripped.rstrip("$"))
        if trailing % 2 == 1:
            buf += stripped[:-1] if not buf else stripped[:-1].lstrip()
            continue
        out.append(buf + (stripped.lstrip() if buf else stripped))
        buf = ""
    if buf:
        out.append(buf)
    return out


def _split_paths(s: str) -> List[str]:
    """Ninja path lists: space-separated, ``$ `` and ``$:`` escaped."""
    parts: List[str] = []
    cur = ""
    i = 0
    while i < len(s):
        c = s[i]
        if c == "$" and i + 1 < len(s):
            cur += s[i + 1] if s[i + 1] in " :$" else c + s[i + 1]
            i += 2
            continue
        if c == " ":
            if cur:
                parts.append(cur)
            cur = ""
        else:
            cur += c
        i += 1
    if cur:
        parts.append(cur)
    return parts


def expand(value: str, variables: Dict[str, str]) -> str:
    return _REF.sub(lambda m: variables.get(m.group(1) or m.group(2), ""), value)


def _split_flags(value: str) -> List[str]:
    try:
        return shlex.split(value)
    except ValueError:
        return value.split()


def parse(text: str, truncated: bool = False) -> NinjaFile:
    """Variables, flags, gencode pairs and edges of a ``build.ninja`` (text only)."""
    variables: Dict[str, str] = {}
    edges: List[Edge] = []
    rules: Dict[str, int] = {}
    for line in _logical_lines(text):
        if not line or line.startswith("#") or line[0] in " \t":
            continue  # indented lines bind rule/edge variables; not needed here
        if line.startswith("build "):
            head, _, rest = line[6:].partition(": ")
            if not rest and head.endswith(":"):
                head, rest = head[:-1], ""
            rule, _, ins = rest.partition(" ")
            outs = _split_paths(head.split(" | ")[0])
            edges.append({"rule": rule, "outputs": outs,
                          "inputs": _split_paths(ins.split(" | ")[0].split(" || ")[0])})
            rules[rule] = rules.get(rule, 0) + 1
            continue
        if line.startswith(("rule ", "pool ", "default ", "include ", "subninja ")):
            continue
        m = _VAR.match(line)
        if m:
            variables[m.group(1)] = m.group(2).strip()
    expanded: Dict[str, str] = {}
    for k, v in variables.items():
        expanded[k] = expand(v, expanded)
    flags = {k: _split_flags(expanded[k]) for k in FLAG_VARS if k in expanded}
    seen: Dict[str, Gencode] = {}
    for vals in flags.values():
        for m in _GENCODE.finditer(" ".join(vals)):
            seen.setdefault(f"{m.group(1)},{m.group(2)}", {"arch": m.group(1), "code": m.group(2)})
    cuda_home = variables.get("cuda_home")
    if cuda_home is None and expanded.get("nvcc", "").endswith("/bin/nvcc"):
        cuda_home = expanded["nvcc"][: -len("/bin/nvcc")]
    return {"variables": variables, "cuda_home": cuda_home, "flags": flags,
            "gencode": list(seen.values()), "edges": edges, "rules": rules,
            "truncated": truncated}


def read(path: str, limit: int = MAX_BYTES) -> Optional[NinjaFile]:
    """``parse`` of the file at ``path`` (regular files only), or None if unreadable."""
    raw = read_head(path, limit + 1)
    if raw is None:
        return None
    return parse(raw[:limit].decode("utf-8", "replace"), truncated=len(raw) > limit)


def with_variable(text: str, name: str, value: str) -> str:
    """``text`` with the top-level ``name = …`` line set to ``value`` (as FlashInfer would)."""
    # the whole logical line: FlashInfer writes flags one per line, joined by "$" + newline
    pat = re.compile(rf"^{re.escape(name)}\s*=(?:[^\n]*\$\n)*[^\n]*$", re.M)
    if pat.search(text):
        return pat.sub(lambda _m: f"{name} = {value}", text, count=1)
    return f"{name} = {value}\n" + text


def build_dir(module_dir: str) -> str:
    """Where ninja ran for this module: its own dir (0.6.1+, and torch's 0.2.0–0.2.5),
    or the shared ``cached_ops`` (0.2.6–0.6.0), whichever holds the ``.ninja_log``."""
    if os.path.exists(os.path.join(module_dir, ".ninja_log")):
        return module_dir
    parent = os.path.dirname(os.path.normpath(module_dir))
    if os.path.exists(os.path.join(parent, ".ninja_log")):
        return parent
    return module_dir


def _fingerprint(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return "-"
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def cache_key(module_dir: str, text_sha: str, extra: str = "") -> str:
    bdir = build_dir(module_dir)
    parts = [os.path.normpath(module_dir), bdir, text_sha, extra,
             _fingerprint(os.path.join(module_dir, "build.ninja")),
             _fingerprint(os.path.join(bdir, ".ninja_log")),
             _fingerprint(os.path.join(bdir, ".ninja_deps"))]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


class ExplainCache:
    """Answers of earlier runs, one JSON file in fidoctor's cache dir (safe to lose)."""

    def __init__(self, path: Optional[str] = None) -> None:
        self.path = path or os.path.join(cache_dir(), CACHE_FILE)
        self.entries: Dict[str, Any] = {}
        self.dirty = False
        raw = read_head(self.path, 16 << 20)
        if raw:
            try:
                data = json.loads(raw.decode("utf-8", "replace"))
                if isinstance(data, dict):
                    self.entries = data
            except ValueError:
                pass

    def get(self, key: str) -> Optional[Explain]:
        hit = self.entries.get(key)
        return dict(hit, cached=True) if isinstance(hit, dict) else None  # type: ignore[return-value]

    def put(self, key: str, value: Explain) -> None:
        self.entries[key] = dict(value, cached=False, t=time.time())
        self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        items = sorted(self.entries.items(), key=lambda kv: kv[1].get("t", 0))
        keep = dict(items[-CACHE_MAX_ENTRIES:])
        from fidoctor.safeio import UnsafeFile, write_atomic

        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            write_atomic(self.path, json.dumps(keep).encode(), what="ninja explain cache")
        except (OSError, UnsafeFile):
            pass  # an unwritable cache dir only costs speed
        self.dirty = False


def parse_explain(stdout: str, stderr: str, first_n: int = 5) -> Dict[str, Any]:
    """Edges to run and the reasons, from ninja's dry-run output."""
    work = 0
    for line in stdout.splitlines():
        m = _PROGRESS.match(line)
        if m:
            work = max(work, int(m.group(2)))
    reasons: Dict[str, int] = {}
    first: List[str] = []
    for line in (stderr + "\n" + stdout).splitlines():
        m = _EXPLAIN.match(line.strip())
        if not m:
            continue
        msg = m.group(1)
        kind = next((k for k, pat in REASONS if pat.match(msg)), "other")
        reasons[kind] = reasons.get(kind, 0) + 1
        if kind != "dirty" and len(first) < first_n:
            first.append(line.strip())
    return {"work": work, "reasons": reasons, "first": first}


def explain(module_dir: str, ninja: str = "ninja", timeout: float = 2.0,
            text: Optional[str] = None, cache: Optional[ExplainCache] = None,
            extra: str = "", env: Optional[Dict[str, str]] = None) -> Explain:
    """``ninja -n -d explain`` for one module dir, or for ``text`` standing in for its
    ``build.ninja`` (what FlashInfer would write now). Never raises."""
    path = os.path.join(module_dir, "build.ninja")
    if text is None:
        raw = read_head(path, MAX_BYTES)
        if raw is None:
            return {"module_dir": module_dir, "status": "no-build-file",
                    "error": f"{path}: not a readable regular file"}
        text_sha = hashlib.sha256(raw).hexdigest()
    else:
        text_sha = hashlib.sha256(text.encode()).hexdigest()
    key = cache_key(module_dir, text_sha, extra)
    if cache is not None:
        hit = cache.get(key)
        if hit is not None:
            return hit
    bdir = build_dir(module_dir)
    tmpdir = None
    try:
        if text is not None:
            tmpdir = tempfile.mkdtemp(prefix="ninja-explain-", dir=_scratch())
            path = os.path.join(tmpdir, "build.ninja")
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        argv = [ninja, "-C", bdir, "-f", os.path.abspath(path), "-n", "-d", "explain"]
        t0 = time.monotonic()
        r = proc.run(argv, timeout=timeout, env=env)
        elapsed = round(time.monotonic() - t0, 3)
    finally:
        if tmpdir:
            for n in os.listdir(tmpdir):
                os.unlink(os.path.join(tmpdir, n))
            os.rmdir(tmpdir)
    out: Explain = {"module_dir": module_dir, "argv": argv, "elapsed_s": elapsed,
                    "cached": False}
    if r.error:
        out["status"] = "no-ninja" if r.error.startswith("not ") else "error"
        out["error"] = r.error
        return out  # not cached: installing ninja must take effect at once
    if r.timed_out:
        out["status"], out["error"] = "timeout", f"no answer within {timeout:g} s"
        return out
    if r.returncode != 0:
        out["status"], out["error"] = "error", r.describe()
    else:
        out["status"] = "ok"
        out.update(parse_explain(r.stdout, r.stderr))  # type: ignore[typeddict-item]
    if cache is not None:
        cache.put(key, out)
    return out


def _scratch() -> str:
    d = os.path.join(cache_dir(), "scratch")
    try:
        os.makedirs(d, exist_ok=True)
        return d
    except OSError:
        return tempfile.gettempdir()


def explain_many(module_dirs: Sequence[str], budget_s: float, ninja: str = "ninja",
                 per_call_s: float = 2.0, texts: Optional[Dict[str, str]] = None,
                 extra: str = "", cache: Optional[ExplainCache] = None) -> List[Explain]:
    """``explain`` for each dir until ``budget_s`` is spent; the rest are ``skipped``."""
    own = cache is None
    cache = cache or ExplainCache()
    out: List[Explain] = []
    deadline = time.monotonic() + budget_s
    for d in module_dirs:
        left = deadline - time.monotonic()
        if left <= 0.05:
            out.append({"module_dir": d, "status": "skipped",
                        "error": f"budget of {budget_s:g} s spent"})
            continue
        out.append(explain(d, ninja=ninja, timeout=min(per_call_s, left),
                           text=(texts or {}).get(d), cache=cache, extra=extra))
    if own:
        cache.save()
    return out
