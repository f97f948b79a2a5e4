"""Every ``fidoctor …`` command we print carries the target the diagnosis used.

Why: a user copies ``fidoctor fix --only X`` into another shell (no venv
active, not the server's environment) and fix then diagnoses — and proves
itself on — fidoctor's own interpreter: the fix "did not work". So each
printed ``fidoctor diagnose|fix|report|snapshot|warmup`` command gets
``--pid N`` (the process the diagnosis read) or ``--python P`` (the
interpreter it queried), unless it already names a target; and a ``warmup``
command on a box without a GPU gets the ``--arch`` the cache was built for
(warmup cannot pick one there). Placeholders such as ``--python <serving
venv>/bin/python`` already name a target and stay as written.
"""

from __future__ import annotations

import re
import shlex
from typing import Dict, List, Optional

from fidoctor.model import Finding
from fidoctor.snapshot import Snapshot
from fidoctor.textsafe import safe_command

TARGETED = ("diagnose", "fix", "report", "snapshot", "warmup")
_ARCH_DIR = re.compile(r"^(\d+)(\d)([af]?)$")


def arch_of(snap: Snapshot) -> Optional[str]:
    """The arch a GPU-less box builds for, as ``--arch`` takes it ("9.0a"); None if a GPU is
    seen, the environment already says, or nothing tells."""
    g = snap.data("gpu")
    if not isinstance(g, dict) or g.get("gpus"):
        return None
    env = snap.context.get("env")
    if not isinstance(env, dict) or env.get("FLASHINFER_CUDA_ARCH_LIST"):
        return None
    wss = snap.data("cache").get("workspaces")
    for ws in wss if isinstance(wss, list) else []:
        m = _ARCH_DIR.match(str(ws.get("arch") or "")) if isinstance(ws, dict) else None
        if m:
            return f"{m.group(1)}.{m.group(2)}{m.group(3)}"
    return None


def target_args(snap: Snapshot) -> Dict[str, List[str]]:
    """{subcommand: extra argv} for the target this snapshot describes."""
    ctx = snap.context
    return args_for(ctx.get("python"), ctx.get("pid"), arch_of(snap))


def args_for(python: Optional[str], pid: Optional[int] = None,
             arch: Optional[str] = None) -> Dict[str, List[str]]:
    """{subcommand: extra argv} for a target named by interpreter and/or pid."""
    base: List[str] = []
    if pid:
        base = ["--pid", str(pid)]
    elif python:
        base = ["--python", str(python)]
    out = {cmd: list(base) for cmd in TARGETED if cmd != "warmup"}
    # warmup has no --pid: it runs the interpreter itself
    out["warmup"] = ["--python", str(python)] if python else []
    if arch:
        out["warmup"] += ["--arch", arch]
    return out


def with_target(command: str, extra: Dict[str, List[str]]) -> str:
    """``command`` with the target's options added, if it is a fidoctor command lacking them."""
    body, sep, comment = command.partition("  #")
    words = body.split()
    if len(words) < 2 or words[0] != "fidoctor" or words[1] not in TARGETED:
        return command

    def has(opt: str) -> bool:
        return any(w == opt or w.startswith(opt + "=") for w in words)

    add = list(extra.get(words[1]) or [])
    named = has("--python") or has("--pid") or has("--from")
    pairs = [(o, v) for o, v in zip(add[::2], add[1::2])
             if not (named and o in ("--python", "--pid")) and not (o == "--arch" and has(o))]
    if not pairs:
        return command
    tail = " ".join(f"{o} {shlex.quote(v)}" for o, v in pairs)
    return safe_command(f"{body.rstrip()} {tail}" + (f"{sep}{comment}" if sep else ""))


def carry_target(findings: List[Finding], snap: Optional[Snapshot],
                 extra: Optional[Dict[str, List[str]]] = None) -> None:
    """Rewrite every fix command of ``findings`` in place (see the module docstring)."""
    if extra is None:
        if snap is None:
            return
        extra = target_args(snap)
    for f in findings:
        for fix in f.fixes:
            fix.commands = [with_target(c, extra) for c in fix.commands]

