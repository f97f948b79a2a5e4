"""Find FlashInfer workspaces under a cache root, whatever version wrote them.

Layouts (flashinfer-jit.md §0–1):
  A/B/C≤0.4.0  <root>/<arch>/{cached_ops,generated,flashinfer_jit.log}
  C≥0.4.1, D   <root>/<version>/<arch>/…   (and <root>/<version>/ with no arch
               when no GPU and no arch list were given)
``<arch>`` is ``90``, ``80_90``, ``noarch`` (0.2/0.3) or ``90a``, ``100a``,
``120f``, ``75_80_89`` (0.4+). ``cubins/`` is not a workspace. We discover what
is there rather than assume one layout.
"""

from __future__ import annotations

import os
import re
from typing import Dict, List, Mapping, Optional

VERSION_RE = re.compile(r"^\d+\.\d+\.\d+([.+\-a-zA-Z0-9]*)$")
ARCH_RE = re.compile(r"^(noarch|\d{2,3}[a-z]?(_\d{2,3}[a-z]?)*)$")
WORKSPACE_MARKERS = ("cached_ops", "flashinfer_jit.log", "generated")
NOT_WORKSPACES = {"cubins"}


def is_workspace(path: str) -> bool:
    return any(os.path.lexists(os.path.join(path, m)) for m in WORKSPACE_MARKERS)


def _subdirs(path: str) -> List[str]:
    try:
        with os.scandir(path) as it:
            return sorted(
                e.name for e in it
                if e.name not in NOT_WORKSPACES and e.is_dir(follow_symlinks=False)
            )
    except OSError:
        return []


def discover_workspaces(root: str) -> List[Dict[str, Optional[str]]]:
    """All workspaces under ``root`` with the version and arch their path implies."""
    found: List[Dict[str, Optional[str]]] = []
    if is_workspace(root):
        found.append({"path": root, "version": None, "arch": None})
    for name in _subdirs(root):
        p = os.path.join(root, name)
        if VERSION_RE.match(name):
            if is_workspace(p):
                found.append({"path": p, "version": name, "arch": None})
            for sub in _subdirs(p):
                q = os.path.join(p, sub)
                if is_workspace(q):
                    found.append({"path": q, "version": name, "arch": sub})
        elif is_workspace(p):
            found.append({"path": p, "version": None, "arch": name if ARCH_RE.match(name) else name})
    return found


def family_of(version: Optional[str]) -> Optional[str]:
    """A: 0.2.0–0.2.5, B: 0.2.6–0.3.x, C: 0.4–0.6.x, D: 0.7.x+ (None if unknown)."""
    if not version:
        return None
    try:
        from packaging.version import InvalidVersion, Version

        v = Version(version)
    except (ImportError, InvalidVersion):
        return None
    if v < Version("0.2.6"):
        return "A"
    if v < Version("0.4.0"):
        return "B"
    if v < Version("0.7.0"):
        return "C"
    return "D"


def cache_root(env: Mapping[str, str], cwd: Optional[str] = None,
               uid: Optional[int] = None) -> str:
    """``<base>/.cache/flashinfer`` exactly as FlashInfer (every release, ``jit/env.py``)
    computes it in a process with environment ``env``, working dir ``cwd`` and uid ``uid``.

    FlashInfer takes ``pathlib.Path(os.getenv("FLASHINFER_WORKSPACE_BASE", Path.home()))``:
    a variable that is *set* wins even when empty or relative (``""`` is the process's cwd;
    ``relative/dir`` is under its cwd, not fidoctor's), and ``Path.home()`` is ``$HOME`` when
    set (``""`` reads as ``/``), else the home of the process's uid in the password database —
    not fidoctor's own home. ``cwd``/``uid`` default to fidoctor's own (``--python``: the
    server is assumed to run as the user running fidoctor, from here).
    """
    base = env.get("FLASHINFER_WORKSPACE_BASE")
    if base is None:
        home = env.get("HOME")
        if home is None:
            import pwd

            try:
                home = pwd.getpwuid(os.getuid() if uid is None else uid).pw_dir
            except KeyError:  # a uid without a passwd entry: Python falls back the same way
                home = ""
        base = home.rstrip("/") or "/"
    if not os.path.isabs(base):
        base = os.path.join(cwd or os.getcwd(), base)
    return os.path.normpath(os.path.join(base, ".cache", "flashinfer"))


def process_cache_root(pid: Optional[int], env: Mapping[str, str]) -> str:
    """``cache_root`` for a live process: its environment ``env``, its cwd and its real uid
    (``/proc/PID/cwd``, ``/proc/PID/status``); fidoctor's own where they cannot be read."""
    cwd: Optional[str] = None
    uid: Optional[int] = None
    if pid:
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            cwd = None
        try:
            with open(f"/proc/{pid}/status", "rb") as f:
                for line in f.read(1 << 16).decode("utf-8", "replace").splitlines():
                    words = line.split()
                    if words[:1] == ["Uid:"] and len(words) > 1 and words[1].isdigit():
                        uid = int(words[1])
        except OSError:
            uid = None
    return cache_root(env, cwd, uid)
