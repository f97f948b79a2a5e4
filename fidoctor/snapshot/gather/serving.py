"""Where FlashInfer lives on this machine when the target interpreter has none.

Why: installed the README's way (its own venv, pipx, ``uv tool``), fidoctor's
default target is its *own* interpreter, with no torch and no FlashInfer; a
diagnosis of that says nothing about the server. So, when the target was not
named (no ``--python``/``--pid``), this section lists the candidates a user
most likely meant: live serving processes (``fidoctor.servers``, each with the
interpreter it really runs; a process that only maps libtorch counts when its
environment holds FlashInfer) and environments whose site-packages hold
FlashInfer, found in the usual places (bounded glob: the target's $HOME,
/opt, /srv, /workspace, /usr/local, the current directory, conda's
``environments.txt``). The probe ``target-lacks-flashinfer`` turns them into
exact commands.

Data contract: :class:`fidoctor.snapshot.types.ServingFacts`.
"""

from __future__ import annotations

import glob
import os
import re
import sys
from typing import Any, Dict, List, Optional

from fidoctor.snapshot.types import ServerFacts, ServingFacts, VenvFacts

NAME = "serving"
BUDGET_S = 10.0
ORDER = 2
REQUIRES = ("target",)
MAX_PREFIXES = 400
PATTERNS = ("{r}", "{r}/*", "{r}/*/*", "{r}/.venv", "{r}/*/.venv", "{r}/*/*/.venv", "{r}/venv",
            "{r}/.virtualenvs/*", "{r}/.local/share/virtualenvs/*", "{r}/.conda/envs/*",
            "{r}/*conda*/envs/*", "{r}/miniforge*/envs/*", "{r}/.local/share/uv/tools/*",
            "{r}/.local/pipx/venvs/*")
_DIST = re.compile(r"^(flashinfer_python|flashinfer)-([^-]+)\.dist-info$")


def explicit(ctx: Any) -> bool:
    """Did the user name the target (``--python``/``--pid``)?"""
    return bool(ctx.pid) or str(ctx.python_source).startswith(("--python", "--pid"))


def roots(env: Dict[str, str]) -> List[str]:
    out: List[str] = []
    for r in (env.get("HOME"), os.path.expanduser("~"), "/opt", "/srv", "/workspace", "/usr/local",
              os.getcwd()):
        if r and os.path.isdir(r) and os.path.realpath(r) not in {os.path.realpath(x) for x in out}:
            out.append(r)
    return out


def conda_envs(env: Dict[str, str]) -> List[str]:
    path = os.path.join(env.get("HOME") or os.path.expanduser("~"), ".conda", "environments.txt")
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [ln.strip() for ln in f.read(1 << 16).splitlines() if ln.strip()][:100]
    except OSError:
        return []


def flashinfer_in(prefix: str) -> Optional[str]:
    """The FlashInfer version in ``prefix``'s site-packages ("?" when a package dir only)."""
    sites = glob.glob(os.path.join(prefix, "lib", "python3*", "site-packages")) + \
        glob.glob(os.path.join(prefix, "lib", "python3*", "dist-packages"))
    for site in sites:
        try:
            names = os.listdir(site)
        except OSError:
            continue
        for n in names:
            m = _DIST.match(n)
            if m:
                return m.group(2)
        if "flashinfer" in names:
            return "?"
    return None


def python_of(prefix: str) -> Optional[str]:
    for n in ("python", "python3"):
        p = os.path.join(prefix, "bin", n)
        if os.access(p, os.X_OK):
            return p
    return None


def find_envs(env: Dict[str, str], skip: List[str]) -> Dict[str, Any]:
    """Environments (prefixes with bin/python) whose site-packages hold FlashInfer."""
    seen = {os.path.realpath(s) for s in skip if s}
    found: List[VenvFacts] = []
    looked = 0
    cands: List[tuple] = [(p, "conda environments.txt") for p in conda_envs(env)]
    for r in roots(env):
        for pat in PATTERNS:
            for hit in glob.glob(os.path.join(pat.format(r=glob.escape(r)), "bin", "python")):
                cands.append((os.path.dirname(os.path.dirname(hit)), f"under {r}"))
    for prefix, where in cands:
        real = os.path.realpath(prefix)
        if real in seen:
            continue
        seen.add(real)
        looked += 1
        if looked > MAX_PREFIXES:
            break
        fi_version = flashinfer_in(prefix)
        py = python_of(prefix)
        if fi_version and py:
            kind = "venv" if os.path.isfile(os.path.join(prefix, "pyvenv.cfg")) else \
                "conda" if os.path.isdir(os.path.join(prefix, "conda-meta")) else "prefix"
            found.append(VenvFacts(python=py, prefix=prefix, kind=kind, flashinfer=fi_version,
                                   where=where))
    return {"venvs": found, "looked": looked, "truncated": looked > MAX_PREFIXES}


def find_servers() -> List[ServerFacts]:
    from fidoctor.servers import find_serving
    from fidoctor.snapshot.context import read_proc_environ
    from fidoctor.snapshot.interpreter import resolve_pid_python

    out: List[ServerFacts] = []
    for c in find_serving()[:20]:
        python, how, fi = None, "", None
        try:
            exe = os.readlink(f"/proc/{c.pid}/exe").replace(" (deleted)", "")
            res = resolve_pid_python(c.pid, read_proc_environ(c.pid), exe)
            python, how = res.python, res.how
            fi = flashinfer_in(res.prefix) if res.prefix else None
        except Exception as e:  # noqa: BLE001 - a process that vanished or hides is a fact
            how = f"interpreter unknown ({type(e).__name__}: {e})"
        if not (c.maps_flashinfer or c.server_argv or c.build_below or fi):
            continue  # torch without FlashInfer anywhere near it: not a FlashInfer server
        out.append(ServerFacts(pid=c.pid, cmdline=c.cmdline[:300], reasons=c.reasons,
                               python=python, how=how, flashinfer_root=c.flashinfer_root,
                               flashinfer=fi))
    return out[:10]


def gather(ctx: Any, done: Dict[str, Any]) -> ServingFacts:
    if explicit(ctx):
        return ServingFacts(explicit=True, servers=[], venvs=[], looked=0, truncated=False)
    t = done.get("target")
    tprefix = (t.data.get("prefix") if t is not None and t.ok else None) or ""
    envs = find_envs(ctx.env, [tprefix, sys.prefix])
    return ServingFacts(explicit=False, servers=find_servers(), venvs=envs["venvs"],
                        looked=envs["looked"], truncated=envs["truncated"])
