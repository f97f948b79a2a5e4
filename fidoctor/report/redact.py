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

By shape as well as by name (issue 14): any env-style name that *contains*
TOKEN, KEY, SECRET, PASS, PWD, CREDENTIAL or AUTH; ``name=value`` /
``name: value`` in any case whose name has such a word (``token=…``,
``--wandb_key=…``); credentialed URLs (however short the user or password);
JWTs, PEM blocks, ``Bearer``/``Basic`` headers; internal DNS names (three or
more labels under a private or generic suffix, public package hosts kept);
user names in paths under any per-user root (``/home``, ``/scratch``,
``/data/users``…) and local accounts' names anywhere in a path. Short values
found by shape are replaced where they stand. Versions are never addresses: a
dotted quad after a package name, ``.so.``, ``-``, ``==``, ``v`` or a version
key is a version (``ninja 1.11.1.4``, ``libcudnn.so.9.1.0.70``).
"""

from __future__ import annotations

import functools
import getpass
import ipaddress
import os
import pwd
import re
import socket
from typing import Any, Dict, Iterable, List, Optional, Tuple

KINDS = ("user", "home", "host", "ip", "mac", "secret")
# Names too generic to hide (or that would collide with our own placeholders).
NOT_USERS = {"root", "nobody", "user", "users", "home", "host", "ip", "mac", "secret"}
NOT_HOSTS = {"localhost", "localhost.localdomain", "ip6-localhost"}
MIN_LITERAL_SECRET = 6  # shorter secrets are hidden where found, not searched for elsewhere
LITERAL_PREFILTER = 32  # up to this many learned values, test each with `in` before the regex

_ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
_ENV_SECRET_PART = re.compile(r"TOKEN|KEY|SECRET|PASS|PWD|CREDENTIAL|AUTH")
# Words that make a flag or a lower-case ``name=value`` a credential (whole words only:
# --tokenizer, --max-num-batched-tokens and --kv-cache-dtype are not secrets).
SECRET_WORDS = {"token", "secret", "secrets", "password", "passwd", "pass", "pwd", "passphrase",
                "credential", "credentials", "auth", "authorization", "apikey", "key", "keys",
                "privatekey", "accesskey", "secretkey", "sessionkey"}
_SECRET_FLAG = re.compile(r"^--?([A-Za-z][\w.-]*?)(?:=(.*))?$", re.S)
_FLAG_IN_TEXT = re.compile(r"(?:^|\s)--?([A-Za-z][\w.-]*)[= ]+([^\s'\"-][^\s'\"]*)")
_ASSIGN = re.compile(r"(?<![\w.-])([A-Za-z][\w.-]{0,60}?)[ \t]*([=:])[ \t]*([\"']?)"
                     r"([^\s\"',;&<>]+)")
_URL_CRED = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)([^/\s:@<>\"']+):([^/\s@<>\"']*)@")
_URL_TOKEN = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)([A-Za-z0-9._~-]{16,})@")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}")
_BEARER = re.compile(r"(?i)\b(bearer|basic|token)([ \t]+)([A-Za-z0-9._~+/=-]{8,})")
_SCHEMES = {"bearer", "basic", "token", "digest"}  # the header's scheme, not its secret
_PEM = re.compile(r"(-----BEGIN ([A-Z0-9 ]+)-----)(.*?)(-----END \2-----|$)", re.S)
_PUBLIC_HOSTS = ("pytorch.org", "pypi.org", "pythonhosted.org", "github.com",
                 "githubusercontent.com", "huggingface.co", "nvidia.com", "nvcr.io",
                 "flashinfer.ai", "python.org", "anaconda.org", "anaconda.com", "ubuntu.com",
                 "debian.org", "readthedocs.io", "vllm.ai", "sglang.ai", "docker.io",
                 "docker.com", "google.com", "googleapis.com")
_DNS_SUFFIXES = (r"(?:com|net|org|io|ai|dev|cloud|internal|intranet|local|localdomain|lan|corp|"
                 r"intra|priv|private|edu|gov|mil|co|us|uk|de|fr|cn|jp|kr|in|ca|au|example|test|"
                 r"cluster|svc|home|site|info|biz|xyz|tech|app|host|domain|ec2)")
_DNS_END = r"(?![\w-]|\.[A-Za-z0-9])"
_DNS = re.compile(
    r"(?<![\w.-])((?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){2,}" + _DNS_SUFFIXES + r")"
    + _DNS_END, re.I)
# What every _DNS match holds (".<suffix>" and the same end): a search that starts only at a
# dot, so the label-by-label scan runs on the few strings that can hold a name at all.
_DNS_HINT = re.compile(r"\." + _DNS_SUFFIXES + _DNS_END, re.I)
_TOKEN_SHAPES = re.compile(
    r"\b(?:hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{20,}|gh[pousr]_[A-Za-z0-9]{20,}|"
    r"github_pat_[A-Za-z0-9_]{20,}|xox[abpr]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16}|"
    r"glpat-[A-Za-z0-9_-]{20,})\b"
)
_TOKEN_HINTS = ("hf_", "sk-", "gh", "github_pat_", "xox", "AKIA", "glpat-")
_HOME_PATH = re.compile(
    r"(?:^|[\s:=\"'(])/(?:home|Users|users|u|scratch|people|staff|homes|"
    r"(?:nfs|mnt|data|net|export|usr|shared|lustre|gpfs|fsx)/(?:home|homes|users|scratch))/"
    r"([A-Za-z0-9._-]+)(?=/|$|[\s:\"')])")
_USER_ROOT_HINTS = ("/home/", "/Users/", "/users/", "/u/", "/scratch/", "/people/", "/staff/",
                    "/homes/")
# One C-level search instead of a generator over each hint (a distinct string each).
_TOKEN_HINT = re.compile("|".join(re.escape(h) for h in _TOKEN_HINTS))
_USER_ROOT_HINT = re.compile("|".join(re.escape(h) for h in _USER_ROOT_HINTS + ("/home/",)))
_MAC = re.compile(r"(?<![0-9A-Fa-f:-])(?:[0-9A-Fa-f]{2}([:-]))(?:[0-9A-Fa-f]{2}\1){4}[0-9A-Fa-f]{2}"
                  r"(?![0-9A-Fa-f:-])")
_IPV4 = re.compile(r"(?<![\w.-])(?:\d{1,3}\.){3}\d{1,3}(?![\w.]|-\w)")
# What every _IPV4 match holds (".b.c.d"), searched from its first literal dot.
_IPV4_HINT = re.compile(r"\.\d{1,3}\.\d{1,3}\.\d")
_IPV4_MAPPED = re.compile(r"(?<![\w:.])::ffff:(?:\d{1,3}\.){3}\d{1,3}(?![\w.])", re.I)
_IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:%\w+)?(?![\w:.])")
# What every IPv6 address _ips yields holds: a "::" (mapped addresses too) or eight groups
# (seven colons, at most four hex digits apart); a log line's 00:00:09 has neither.
_IPV6_HINT = re.compile(r"::|:(?:[0-9A-Fa-f]{0,4}:){6}")
# A dotted quad right after one of these is a version, never an address.
PACKAGES = (r"ninja|cudnn|libcudnn|nccl|libnccl|cuda|cudart|libcudart|cublas|cublaslt|cufft|"
            r"curand|cusparse|cusolver|cupti|nvrtc|nvjitlink|nvtx|nvcc|cicc|ptxas|driver|torch|"
            r"pytorch|triton|flashinfer|flashinfer-python|python|gcc|g\+\+|clang|cmake|tensorrt|"
            r"trt|vllm|sglang|numpy|transformers|cutlass|pip|setuptools|wheel|ubuntu|debian|"
            r"kernel|linux|glibc|libc|openmpi|ucx|nvshmem|nvidia-[\w-]+|[\w-]+-cu\d+|release|"
            r"build|toolkit|runtime|sdk|cuDNN|NCCL|CUDA")
_VERSIONISH = re.compile(r"(?:version|==|>=|<=|~=|\bv|\.so\.|\b(?:" + PACKAGES + r")[ \t:=]*)$",
                         re.I)
_PLACEHOLDER = re.compile(r"<(?:" + "|".join(KINDS) + r")-\d+>")


def is_secret_key(key: str) -> bool:
    """True for environment-style names whose values are credentials.

    Any upper-case name containing TOKEN, KEY, SECRET, PASS, PWD, CREDENTIAL or
    AUTH (``WANDB_API_KEY``, ``NVIDIA_API_KEYS``, ``HF_HUB_TOKEN``,
    ``AWS_SECRET_ACCESS_KEY``, ``DB_PASSWD``).
    """
    if not ("A" <= key[:1] <= "Z"):  # most keys of a snapshot are paths and lower-case names
        return False
    return bool(_ENV_NAME.match(key)) and bool(_ENV_SECRET_PART.search(key))


@functools.lru_cache(maxsize=8192)  # the same few names by the ten thousand (log lines)
def secret_name(name: str) -> bool:
    """True for a flag or ``name=`` whose words name a credential (``wandb_key``, ``token``)."""
    if is_secret_key(name):
        return True
    words = [w for w in re.split(r"[-_.]+", name.lower()) if w]
    return any(w in SECRET_WORDS for w in words) or "".join(words[-2:]) in SECRET_WORDS


class Redactor:
    """Learns private values, then replaces each with the same placeholder everywhere."""

    def __init__(self) -> None:
        self._map: Dict[str, str] = {}  # value -> placeholder
        self._kind: Dict[str, str] = {}  # value -> kind
        self._counts: Dict[str, int] = {k: 0 for k in KINDS}
        self._regex: Optional[re.Pattern] = None
        self._literals: List[str] = []  # the values _regex searches for
        # Snapshots repeat strings (symbol names, module paths) by the thousand: learn each
        # distinct string once, and remember results until the set of values changes.
        # One set and one memo per "is it under a version key" (a tuple key per lookup cost
        # more than the lookup: a 10,000-module snapshot has a million strings and keys).
        self._learned: Tuple[set, set] = (set(), set())  # [versioned]
        self._memo: Tuple[Dict[str, str], Dict[str, str]] = ({}, {})  # [versioned]
        self._vkeys: Dict[str, bool] = {}  # key -> does it name a version
        self._kinfo: Dict[str, Tuple[bool, int]] = {}  # key -> (secret key, version key)
        self._used: set = set()  # placeholders that replaced something
        self._accounts: set = set()  # human accounts of this machine: private in any path

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
        self._memo[0].clear()
        self._memo[1].clear()
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
        self._accounts |= local_accounts()
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
            self._learn_owners(obj)
        self._learn_walk(obj, None)
        return self

    def _learn_owners(self, snap: Dict[str, Any]) -> None:
        """Names of the (human) users that own the snapshot's processes."""
        sec = (snap.get("sections") or {}).get("processes") if isinstance(
            snap.get("sections"), dict) else None
        procs = ((sec or {}).get("data") or {}).get("processes") if isinstance(sec, dict) else None
        for p in procs if isinstance(procs, list) else []:
            uid = p.get("uid") if isinstance(p, dict) else None
            if isinstance(uid, int) and not isinstance(uid, bool) and uid >= 1000:
                try:
                    self.add("user", pwd.getpwuid(uid).pw_name)
                except (KeyError, OverflowError):
                    pass

    def _versioned(self, key: Optional[str]) -> bool:
        """Is ``key`` a version's key (its dotted quads are versions, never addresses)?"""
        if not key:
            return False
        v = self._vkeys.get(key)
        if v is None:
            v = self._vkeys[key] = "version" in key.lower()
        return v

    def _keyinfo(self, key: str) -> Tuple[bool, int]:
        """(does ``key`` name a secret, does it name a version): asked once per distinct key."""
        info = self._kinfo.get(key)
        if info is None:
            info = self._kinfo[key] = (is_secret_key(key), int(self._versioned(key)))
        return info

    def _learn_walk(self, obj: Any, key: Optional[str]) -> None:
        # The learned sets are checked here before a call: most strings were seen before.
        # A million keys and strings on a 10,000-module box: one dict lookup per key
        # (``_kinfo``) instead of two calls, and argv is spotted in the loop over a list.
        learned = self._learned
        plain = learned[0]
        if isinstance(obj, dict):
            kinfo = self._kinfo
            for k, v in obj.items():
                ks = k if type(k) is str else str(k)
                if ks not in plain:
                    self._learn_string(ks, None)
                if isinstance(v, str):
                    info = kinfo.get(ks) or self._keyinfo(ks)
                    if info[0]:
                        self._add_secret(v)
                    if v not in learned[info[1]]:
                        self._learn_string(v, ks)
                elif isinstance(v, (dict, list, tuple)):
                    self._learn_walk(v, ks)
        elif isinstance(obj, (list, tuple)):
            if _has_flag(obj):
                self._learn_argv([x for x in obj if isinstance(x, str)])
            seen = learned[self._versioned(key)]
            for x in obj:
                if isinstance(x, str):
                    if x not in seen:
                        self._learn_string(x, key)
                elif isinstance(x, (dict, list, tuple)):
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
            if not m or not secret_name(m.group(1)):
                continue
            if m.group(2) is not None:
                self._add_secret(m.group(2))
            elif i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                self._add_secret(argv[i + 1])

    def _learn_string(self, s: str, key: Optional[str]) -> None:
        versioned = self._versioned(key)
        if s in self._learned[versioned]:
            return
        self._learned[versioned].add(s)
        # Cheap substring tests first: most strings (symbols, module names) hold no candidate.
        if "://" in s:
            for m in _URL_CRED.finditer(s):
                self.add("user", m.group(2))
                self._add_secret(m.group(3))
            for m in _URL_TOKEN.finditer(s):
                self._add_secret(m.group(2))
        if "=" in s or ":" in s:
            for m in _ASSIGN.finditer(s):
                if _assigned_secret(m):
                    self._add_secret(m.group(4))
        if "-" in s and " " in s:
            for m in _FLAG_IN_TEXT.finditer(s):
                if secret_name(m.group(1)):
                    self._add_secret(m.group(2))
        if _TOKEN_HINT.search(s):
            for m in _TOKEN_SHAPES.finditer(s):
                self._add_secret(m.group(0))
        if "eyJ" in s:
            for m in _JWT.finditer(s):
                self._add_secret(m.group(0))
        if "-----BEGIN " in s:
            for m in _PEM.finditer(s):
                self._add_secret(m.group(3).strip())
        if (" " in s or "\t" in s) and _maybe_scheme(s):
            for m in _BEARER.finditer(s):
                self._add_secret(m.group(3))
        if _USER_ROOT_HINT.search(s):
            for m in _HOME_PATH.finditer(s):
                self.add("user", m.group(1))
        if self._accounts and "/" in s:
            for part in s.split("/"):
                if part in self._accounts:
                    self.add("user", part)
        if s.count(".") >= 2 and _DNS_HINT.search(s):
            for m in _DNS.finditer(s):
                name = m.group(1).lower()
                if not any(name == h or name.endswith("." + h) for h in _PUBLIC_HOSTS):
                    self.add("host", m.group(1))
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
            self._literals = []
            for value in sorted(self._map, key=len, reverse=True):
                kind = self._kind[value]
                if kind == "secret" and len(value) < MIN_LITERAL_SECRET:
                    continue  # hidden where it was found (by key), not searched for
                self._literals.append(value)
                esc = re.escape(value)
                if kind == "ip" and "." in value:  # never a piece of a longer version
                    esc = rf"(?<![\w.-]){esc}(?![\w.]|-\w)"
                elif kind in ("user", "host", "ip", "mac"):
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
        memo = self._memo[self._versioned(key)]
        hit = memo.get(s)
        if hit is not None:
            return hit
        self._learn_string(s, key)  # anything new in this string joins the map first
        rx = self._compiled()
        # The pattern matches only where a learned value stands, literally: when there are
        # few, asking str.__contains__ for each first skips the regex scan of most strings
        # (a 10,000-module snapshot: 130,000 distinct strings, a handful of values).
        if rx is not None and (len(self._literals) > LITERAL_PREFILTER
                               or any(v in s for v in self._literals)):
            out = rx.sub(self._replace, s)
        else:
            out = s
        out = self._in_place(out)
        memo[s] = out
        return out

    def _in_place(self, s: str) -> str:
        """Shape rules applied where they match: catches values too short to search for
        elsewhere (``postgres://u:p@db``, ``token=abc``, ``Bearer x…``)."""
        if "://" in s:
            s = _URL_CRED.sub(lambda m: m.group(1) + self._ph("user", m.group(2)) + ":"
                              + self._ph("secret", m.group(3)) + "@", s)
        if (" " in s or "\t" in s) and _maybe_scheme(s):
            s = _BEARER.sub(lambda m: m.group(1) + m.group(2) + self._ph("secret", m.group(3)),
                            s)
        if "=" in s or ":" in s:
            s = _ASSIGN.sub(self._assign, s)
        if "-" in s and " " in s:
            s = _FLAG_IN_TEXT.sub(self._flag, s)
        if "-----BEGIN " in s:
            s = _PEM.sub(lambda m: m.group(1) + self._ph("secret", m.group(3).strip())
                         + m.group(4), s)
        return s

    def _assign(self, m: re.Match) -> str:
        if not _assigned_secret(m):
            return m.group(0)
        return m.group(0)[: m.start(4) - m.start(0)] + self._ph("secret", m.group(4))

    def _flag(self, m: re.Match) -> str:
        if not secret_name(m.group(1)) or _PLACEHOLDER.fullmatch(m.group(2)):
            return m.group(0)
        return m.group(0)[: m.start(2) - m.start(0)] + self._ph("secret", m.group(2))

    def _ph(self, kind: str, value: str) -> str:
        """The placeholder for ``value`` (``value`` itself when it is one already or empty)."""
        if not value or _PLACEHOLDER.fullmatch(value):
            return value
        if kind == "user" and (value.lower() in NOT_USERS or "/" in value):
            kind = "secret"  # a URL's user part is still a credential half
        ph = self.add(kind, value) or self.add("secret", value)
        if ph:
            self._used.add(ph)
            return ph
        return value

    def _replace(self, m: re.Match) -> str:
        ph = self._map.get(m.group(0), m.group(0))
        self._used.add(ph)
        return ph

    def tree(self, obj: Any, key: Optional[str] = None) -> Any:
        """A redacted copy of a JSON-able tree; dict keys are redacted too.

        Copied where something changed: a dict or list with nothing to redact anywhere below
        it is returned as it is (shared, like ``Snapshot.to_dict``'s sections), which spares
        allocating most of a 10,000-module snapshot's 270,000 containers; tuples become lists.
        """
        if isinstance(obj, dict):
            out = None
            memo = self._memo
            plain = memo[0]
            kinfo = self._kinfo
            for k, v in obj.items():
                ks = k if type(k) is str else str(k)
                kt = plain.get(ks) or self.text(ks)  # the memo first: keys repeat by the 10,000
                if isinstance(v, str):
                    info = kinfo.get(ks) or self._keyinfo(ks)
                    if info[0] and v.strip():
                        ph = self.add("secret", v.strip())
                        if ph:
                            self._used.add(ph)
                        nv = ph or self.text(v, ks)
                    else:
                        nv = memo[info[1]].get(v) or self.text(v, ks)
                elif isinstance(v, (dict, list, tuple)):
                    nv = self.tree(v, ks)
                else:
                    nv = v
                if out is None:
                    if nv is v and kt is k:
                        continue
                    if type(nv) is str and nv == v and kt == k and type(k) is str:
                        continue
                    out = {}
                    for k0, v0 in obj.items():  # the unchanged items before this one
                        if k0 is k:
                            break
                        out[k0] = v0
                out[kt] = nv
            return obj if out is None else out
        if isinstance(obj, (list, tuple)):
            flags = _has_flag(obj)  # no "-…" string: nothing here is a flag or its value
            if flags:
                self._learn_argv([x for x in obj if isinstance(x, str)])
            vmemo = self._memo[self._versioned(key)]
            out_list: Optional[List[Any]] = None if type(obj) is list and not flags else []
            for i, x in enumerate(obj):
                if isinstance(x, str):
                    nx = vmemo.get(x) or self.text(x, key)
                elif isinstance(x, (dict, list, tuple)):
                    nx = self.tree(x, key)
                else:
                    nx = x
                if out_list is None:
                    if nx is x or (type(nx) is str and nx == x):
                        continue
                    out_list = list(obj[:i])
                out_list.append(nx)
            if out_list is None:
                return obj
            if not flags:
                return out_list
            for i, a in enumerate(obj):  # argv: a secret flag's value, however short
                m = _SECRET_FLAG.match(a) if isinstance(a, str) else None
                if not m or not secret_name(m.group(1)):
                    continue
                if m.group(2):
                    out_list[i] = a[: m.start(2)] + self._ph("secret", m.group(2))
                elif i + 1 < len(obj) and isinstance(obj[i + 1], str) \
                        and not obj[i + 1].startswith("-"):
                    out_list[i + 1] = self._ph("secret", obj[i + 1])
            return out_list
        if isinstance(obj, str):
            return self.text(obj, key)
        return obj

    def summary(self) -> Dict[str, int]:
        """How many distinct values of each kind were actually hidden (never the values)."""
        out: Dict[str, int] = {}
        for ph in sorted(self._used):
            kind = ph[1:].split("-", 1)[0]
            out[kind] = out.get(kind, 0) + 1
        return {k: out[k] for k in KINDS if k in out}


def _has_flag(items: Iterable[Any]) -> bool:
    """Does a list hold a string that starts with "-" (what ``_SECRET_FLAG`` needs)? A snapshot
    has 170,000 lists on a 10,000-module box; almost none are argv."""
    for x in items:  # noqa: SIM110  (a loop, not any(<generator>): 170,000 calls)
        if isinstance(x, str) and x[:1] == "-":
            return True
    return False


def _maybe_scheme(s: str) -> bool:
    """Can ``_BEARER`` match ``s``? Its case-blind scan is slow; an ASCII string's lower case
    answers exactly (any other string is left to the regex: re's case folding is wider)."""
    if not s.isascii():
        return True
    low = s.lower()
    return "bearer" in low or "basic" in low or "token" in low


def _ips(s: str, key: Optional[str]) -> Iterable[str]:
    if "." in s and not (key and "version" in key.lower()) and _IPV4_HINT.search(s):
        for m in _IPV4.finditer(s):
            value = m.group(0)
            try:
                ip = ipaddress.IPv4Address(value)
            except ValueError:
                continue
            if ip.is_loopback or ip.is_unspecified or str(ip) == "255.255.255.255":
                continue
            if _VERSIONISH.search(s[max(0, m.start() - 40):m.start()]):
                continue
            yield value
    if s.count(":") >= 2 and _IPV6_HINT.search(s):
        for m in _IPV4_MAPPED.finditer(s):
            yield m.group(0)
        for m in _IPV6.finditer(s):
            value = m.group(0)
            if not any(c in "0123456789abcdefABCDEF" for c in value):
                continue
            if "::" not in value and value.count(":") != 7:
                continue  # 8 groups or a "::": anything else is no address (a time, 00:00:09)
            try:
                ip6 = ipaddress.IPv6Address(value.split("%", 1)[0])
            except ValueError:
                continue
            if ip6.is_loopback or ip6.is_unspecified:
                continue
            yield value


def _assigned_secret(m: re.Match) -> bool:
    """Is this ``name=value`` match a credential? (short values only for env-style names)"""
    name, value = m.group(1), m.group(4)
    if _PLACEHOLDER.fullmatch(value) or value.lower() in _SCHEMES or not secret_name(name):
        return False
    return len(value) >= 3 or is_secret_key(name)


def local_accounts() -> set:
    """Names of this machine's human accounts (uid >= 1000, not nobody): private anywhere."""
    out = set()
    try:
        for e in pwd.getpwall():
            if 1000 <= e.pw_uid < 65534 and len(e.pw_name) >= 3 and \
                    e.pw_name.lower() not in NOT_USERS:
                out.add(e.pw_name)
    except OSError:
        pass
    return out


def only_target_trees(snap: Dict[str, Any]) -> Dict[str, Any]:
    """``snap`` with its processes section cut down to the target cache's build trees.

    Other users' builds (other caches on the box) are recorded by the gatherer
    (``in_target: false``) but judged by no probe; their argv and paths are
    none of a bug report's business. Kept: every member of a tree with an
    ``in_target`` process, and those members' ancestors (the Python above).
    """
    from fidoctor.proctree import build_trees

    sec = (snap.get("sections") or {}).get("processes")
    if not isinstance(sec, dict) or not isinstance(sec.get("data"), dict):
        return snap
    data: Dict[str, Any] = sec["data"]
    procs = data.get("processes")
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
    raw_groups = data.get("groups")
    groups = {g: pids for g, pids in (raw_groups if isinstance(raw_groups, dict) else {}).items()
              if isinstance(pids, list) and any(pid in keep for pid in pids)}
    out["sections"]["processes"] = dict(sec, data=dict(data, processes=kept, groups=groups,
                                                       left_out_other_trees=len(procs)
                                                       - len(kept)))
    return out
