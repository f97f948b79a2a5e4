"""Redaction: a separate pass that replaces private values with stable placeholders.

Why a separate pass (sos's lesson): gatherers record the truth, and one
redactor, applied the same way to the snapshot *and* to the rendered report,
decides what leaves the machine. The same value always becomes the same
placeholder (``<user-1>``, ``<host-1>``, ``<ip-1>``, ``<mac-1>``,
``<secret-1>``, ``<home-1>``), so the report still reads and a redacted
snapshot replays to the same findings (paths stay paths: ``/home/<user-1>/…``).

It works in two steps. ``learn`` walks a snapshot (every key and value) and the
local machine and collects the values to hide: user names (USER, LOGNAME,
``/home/<name>/``), home dirs, host names, secrets (values of HF_TOKEN,
``*_KEY``, ``*_SECRET``, ``*_TOKEN``, ``*_PASSWORD`` and similar, ``--api-key
X`` in argv, the ``user:pass`` of URLs, token-shaped strings), IPv4/IPv6 and
MAC addresses. ``text``/``tree`` then replace them everywhere, longest first,
and run the pattern rules once more so nothing new slips through.
"""

from __future__ import annotations

import getpass
import ipaddress
import os
import re
import socket
from typing import Any, Dict, Iterable, List, Optional, Tuple

KINDS = ("user", "home", "host", "ip", "mac", "secret")
# Names too generic to hide (or that would collide with our own placeholders).
NOT_USERS = {"root", "nobody", "user", "users", "home", "host", "ip", "mac", "secret"}
NOT_HOSTS = {"localhost", "localhost.localdomain", "ip6-localhost"}
MIN_LITERAL_SECRET = 6  # shorter secrets are hidden where found, not searched for elsewhere

_SECRET_KEY = re.compile(
    r"(?:^|_)(?:TOKEN|KEY|SECRET|SECRETS|PASSWORD|PASSWD|PASS|PWD|CREDENTIAL|CREDENTIALS|"
    r"APIKEY|AUTH)$"
)
_SECRET_FLAG = re.compile(
    r"^--?(?:[\w-]*-)?(?:api-key|token|hf-token|secret|password|passwd|key|auth)(?:=(.*))?$",
    re.I,
)
_FLAG_IN_TEXT = re.compile(
    r"(?:^|\s)--?(?:[\w-]*-)?(?:api-key|token|secret|password|passwd)[= ]+([^\s'\"-][^\s'\"]*)",
    re.I,
)
_ASSIGN = re.compile(
    r"\b([A-Z][A-Z0-9_]*(?:TOKEN|KEY|SECRET|PASSWORD|PASSWD))=([^\s'\"]+)"
)
_URL_CRED = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)([^/\s:@<>\"']+):([^/\s@<>\"']*)@")
_TOKEN_SHAPES = re.compile(
    r"\b(?:hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{20,}|gh[pousr]_[A-Za-z0-9]{20,}|"
    r"github_pat_[A-Za-z0-9_]{20,}|xox[abpr]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16}|"
    r"glpat-[A-Za-z0-9_-]{20,})\b"
)
_TOKEN_HINTS = ("hf_", "sk-", "gh", "github_pat_", "xox", "AKIA", "glpat-")
_HOME_PATH = re.compile(r"(?:^|[\s:=\"'(])/(?:home|Users)/([A-Za-z0-9._-]+)(?=/|$|[\s:\"')])")
_MAC = re.compile(r"(?<![0-9A-Fa-f:-])(?:[0-9A-Fa-f]{2}([:-]))(?:[0-9A-Fa-f]{2}\1){4}[0-9A-Fa-f]{2}"
                  r"(?![0-9A-Fa-f:-])")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.]|-\w)")
_IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:%\w+)?(?![\w:])")
_VERSIONISH = re.compile(r"(?:version|==|\bv)\s*[:=]?\s*$", re.I)
_PLACEHOLDER = re.compile(r"<(?:" + "|".join(KINDS) + r")-\d+>")


def is_secret_key(key: str) -> bool:
    """True for environment-style names whose values are credentials (HF_TOKEN, *_KEY…)."""
    return key == key.upper() and bool(_SECRET_KEY.search(key))


class Redactor:
    """Learns private values, then replaces each with the same placeholder everywhere."""

    def __init__(self) -> None:
        self._map: Dict[str, str] = {}  # value -> placeholder
        self._kind: Dict[str, str] = {}  # value -> kind
        self._counts: Dict[str, int] = {k: 0 for k in KINDS}
        self._regex: Optional[re.Pattern] = None
        # Snapshots repeat strings (symbol names, module paths) by the thousand: learn each
        # distinct string once, and remember results until the set of values changes.
        self._learned: set = set()
        self._memo: Dict[Tuple[str, bool], str] = {}
        self._used: set = set()  # placeholders that replaced something

    # -- learning ---------------------------------------------------------------------------

    def add(self, kind: str, value: Optional[str]) -> Optional[str]:
        """Register ``value`` as private; returns its placeholder (None if not worth hiding)."""
        if not value or not isinstance(value, str) or _PLACEHOLDER.fullmatch(value):
            return None
        value = value.strip()
        if kind == "user" and (value.lower() in NOT_USERS or len(value) < 2 or "/" in value):
            return None
        if kind == "host" and (value.lower() in NOT_HOSTS or len(value) < 2):
            return None
        if kind == "home" and (value.rstrip("/") in ("", "/root") or not value.startswith("/")):
            return None
        if kind == "home":
            value = value.rstrip("/")
        if value in self._map:
            return self._map[value]
        self._counts[kind] += 1
        ph = f"<{kind}-{self._counts[kind]}>"
        self._map[value] = ph
        self._kind[value] = kind
        self._regex = None
        self._memo.clear()
        return ph

    def learn_local(self, env: Optional[Dict[str, str]] = None) -> Redactor:
        """The machine running fidoctor: its host name, user and home."""
        env = dict(os.environ if env is None else env)
        self.add("host", socket.gethostname())
        try:
            self.add("host", os.uname().nodename)
        except AttributeError:
            pass
        for var in ("USER", "LOGNAME", "SUDO_USER"):
            self.add("user", env.get(var))
        try:
            self.add("user", getpass.getuser())
        except (KeyError, OSError):
            pass
        self.add("home", env.get("HOME"))
        return self

    def learn(self, obj: Any) -> Redactor:
        """Collect private values from a snapshot dict (or any JSON-able tree)."""
        if isinstance(obj, dict):
            env = obj.get("context", {}).get("env") if isinstance(obj.get("context"), dict) else None
            if isinstance(env, dict):
                for var in ("USER", "LOGNAME", "SUDO_USER"):
                    self.add("user", env.get(var))
            host = obj.get("sections", {}).get("host", {}) if isinstance(obj.get("sections"), dict) \
                else {}
            if isinstance(host, dict):
                name = (host.get("data") or {}).get("hostname")
                self.add("host", name)
                if isinstance(name, str) and "." in name:
                    self.add("host", name.split(".", 1)[0])
            if isinstance(env, dict):
                self.add("home", env.get("HOME"))
        self._learn_walk(obj, None)
        return self

    def _learn_walk(self, obj: Any, key: Optional[str]) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                ks = str(k)
                self._learn_string(ks, None)
                if isinstance(v, str) and is_secret_key(ks):
                    self._add_secret(v)
                self._learn_walk(v, ks)
        elif isinstance(obj, (list, tuple)):
            self._learn_argv([x for x in obj if isinstance(x, str)])
            for x in obj:
                self._learn_walk(x, key)
        elif isinstance(obj, str):
            self._learn_string(obj, key)

    def _add_secret(self, value: str) -> None:
        value = value.strip()
        if value:
            self.add("secret", value)

    def _learn_argv(self, argv: List[str]) -> None:
        for i, a in enumerate(argv):
            m = _SECRET_FLAG.match(a)
            if not m:
                continue
            if m.group(1):
                self._add_secret(m.group(1))
            elif i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                self._add_secret(argv[i + 1])

    def _learn_string(self, s: str, key: Optional[str]) -> None:
        versioned = bool(key and "version" in key.lower())
        if (s, versioned) in self._learned:
            return
        self._learned.add((s, versioned))
        # Cheap substring tests first: most strings (symbols, module names) hold no candidate.
        if "://" in s:
            for m in _URL_CRED.finditer(s):
                self.add("user", m.group(2))
                self._add_secret(m.group(3))
        if "=" in s:
            for m in _ASSIGN.finditer(s):
                self._add_secret(m.group(2))
        if "-" in s and " " in s:
            for m in _FLAG_IN_TEXT.finditer(s):
                self._add_secret(m.group(1))
        if any(t in s for t in _TOKEN_HINTS):
            for m in _TOKEN_SHAPES.finditer(s):
                self._add_secret(m.group(0))
        if "/home/" in s or "/Users/" in s:
            for m in _HOME_PATH.finditer(s):
                self.add("user", m.group(1))
        if s.count(":") >= 5 or s.count("-") >= 5:
            for m in _MAC.finditer(s):
                if m.group(0).replace("-", ":").lower() != "00:00:00:00:00:00":
                    self.add("mac", m.group(0))
        for value in _ips(s, "version" if versioned else None):
            self.add("ip", value)

    # -- applying ---------------------------------------------------------------------------

    def _compiled(self) -> Optional[re.Pattern]:
        if self._regex is None and self._map:
            parts = []
            for value in sorted(self._map, key=len, reverse=True):
                kind = self._kind[value]
                if kind == "secret" and len(value) < MIN_LITERAL_SECRET:
                    continue  # hidden where it was found (by key), not searched for
                esc = re.escape(value)
                if kind in ("user", "host", "ip", "mac"):
                    esc = rf"(?<![A-Za-z0-9]){esc}(?![A-Za-z0-9])"
                elif kind == "home":
                    esc = rf"{esc}(?![\w.-])"
                parts.append(esc)
            self._regex = re.compile("|".join(parts)) if parts else None
        return self._regex

    def text(self, s: str, key: Optional[str] = None) -> str:
        """``s`` with every learned value and every pattern match replaced."""
        if not s:
            return s
        memo_key = (s, bool(key and "version" in key.lower()))
        hit = self._memo.get(memo_key)
        if hit is not None:
            return hit
        self._learn_string(s, key)  # anything new in this string joins the map first
        rx = self._compiled()
        out = s if rx is None else rx.sub(self._replace, s)
        self._memo[memo_key] = out
        return out

    def _replace(self, m: re.Match) -> str:
        ph = self._map.get(m.group(0), m.group(0))
        self._used.add(ph)
        return ph

    def tree(self, obj: Any, key: Optional[str] = None) -> Any:
        """A redacted deep copy of a JSON-able tree; dict keys are redacted too."""
        if isinstance(obj, dict):
            out = {}
            for k, v in obj.items():
                ks = str(k)
                if isinstance(v, str) and is_secret_key(ks) and v.strip():
                    ph = self.add("secret", v.strip())
                    if ph:
                        self._used.add(ph)
                    out[self.text(ks)] = ph or self.text(v, ks)
                else:
                    out[self.text(ks)] = self.tree(v, ks)
            return out
        if isinstance(obj, (list, tuple)):
            strs = [x for x in obj if isinstance(x, str)]
            if strs:
                self._learn_argv(strs)
            return [self.tree(x, key) for x in obj]
        if isinstance(obj, str):
            return self.text(obj, key)
        return obj

    def snapshot_dict(self, snap: Dict[str, Any]) -> Dict[str, Any]:
        """Learn from ``snap`` and return its redacted copy."""
        self.learn(snap)
        return self.tree(snap)

    def summary(self) -> Dict[str, int]:
        """How many distinct values of each kind were actually hidden (never the values)."""
        out: Dict[str, int] = {}
        for ph in sorted(self._used):
            kind = ph[1:].split("-", 1)[0]
            out[kind] = out.get(kind, 0) + 1
        return {k: out[k] for k in KINDS if k in out}

    def mapping(self) -> List[Tuple[str, str]]:
        """(placeholder, value) pairs: the key to reverse a report. Never written by default."""
        return sorted(((ph, v) for v, ph in self._map.items()), key=lambda t: t[0])


def _ips(s: str, key: Optional[str]) -> Iterable[str]:
    if "." in s and not (key and "version" in key.lower()):
        for m in _IPV4.finditer(s):
            value = m.group(0)
            try:
                ip = ipaddress.IPv4Address(value)
            except ValueError:
                continue
            if ip.is_loopback or ip.is_unspecified or str(ip) == "255.255.255.255":
                continue
            if _VERSIONISH.search(s[max(0, m.start() - 16):m.start()]):
                continue
            yield value
    if s.count(":") >= 2:
        for m in _IPV6.finditer(s):
            value = m.group(0)
            if not any(c in "0123456789abcdefABCDEF" for c in value):
                continue
            try:
                ip6 = ipaddress.IPv6Address(value.split("%", 1)[0])
            except ValueError:
                continue
            if ip6.is_loopback or ip6.is_unspecified:
                continue
            yield value


def only_target_trees(snap: Dict[str, Any]) -> Dict[str, Any]:
    """``snap`` with its processes section cut down to the target cache's build trees.

    Other users' builds (other caches on the box) are recorded by the gatherer
    (``in_target: false``) but judged by no probe; their argv and paths are
    none of a bug report's business. Kept: every member of a tree with an
    ``in_target`` process, and those members' ancestors (the Python above).
    """
    from fidoctor.proctree import build_trees

    sec = (snap.get("sections") or {}).get("processes")
    data = sec.get("data") if isinstance(sec, dict) else None
    procs = data.get("processes") if isinstance(data, dict) else None
    if not isinstance(procs, list) or not all(isinstance(p, dict) for p in procs):
        return snap
    keep: set = set()
    for tree in build_trees(procs):
        members = tree["procs"]
        if any(p.get("in_target") for p in members):
            for p in members:
                keep.add(p.get("pid"))
                keep.update(p.get("ppid_chain") or [])
    kept = [p for p in procs if p.get("pid") in keep]
    if len(kept) == len(procs):
        return snap
    out = dict(snap)
    out["sections"] = dict(snap["sections"])
    groups = {g: pids for g, pids in (data.get("groups") or {}).items()
              if any(pid in keep for pid in pids)}
    out["sections"]["processes"] = dict(sec, data=dict(data, processes=kept, groups=groups,
                                                       left_out_other_trees=len(procs)
                                                       - len(kept)))
    return out
