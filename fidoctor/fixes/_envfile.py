"""The env file: process-scoped fixes the user sources before starting the server.

Fixes like ``preload-cudart`` change no installed file; they need variables in
the serving process's environment. fidoctor collects them from every plan into
one file, ``<state_dir>/env.sh``, written through the transaction layer (so
undo takes it back) and prints the exact ``export`` lines too. Path-like
variables are prepended to whatever the user already has.

An env-file fix plugin is a guard and one ``env_plan`` call: ``probe_env``
takes the variables its probe chose (``data["env"]``), ``env_plan`` builds a
plan that changes nothing on disk but the env file.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
from typing import Dict, List, Optional, Sequence, Tuple

from fidoctor.fixes import NotApplicable, Plan
from fidoctor.model import Finding
from fidoctor.safeio import SMALL_CAP, read_text_or_none
from fidoctor.txn.safety import sha256_or_none
from fidoctor.txn.steps import PutFile

PREPEND = ("LD_PRELOAD", "LD_LIBRARY_PATH", "PATH")
HEADER = ("# Written by fidoctor fix. Source it in the shell or unit that starts the server:\n"
          "#   . {path}\n# fidoctor undo takes it back.\n")
_EXPORT = re.compile(r"^export ([A-Za-z_][A-Za-z0-9_]*)=")
NEXT_START = "takes effect on the next start of the server"


def probe_env(finding: Finding, needed: str, reason: str) -> Dict[str, str]:
    """The variables the probe chose (``data["env"]``); ``NotApplicable(reason)`` without
    a value for ``needed``."""
    env = finding.data.get("env") or {}
    if not env.get(needed):
        raise NotApplicable(reason)
    return dict(env)


def env_plan(finding: Finding, fix_id: str, safety: str, why: str, env: Dict[str, str],
             notes: Sequence[str] = (NEXT_START,), modules: Sequence[str] = ()) -> Plan:
    """The plan of a fix that only writes ``env`` into the env file."""
    return Plan(fix_id=fix_id, finding_id=finding.id, subject=finding.subject, safety=safety,
                why=why, env=dict(env), notes=list(notes), modules=list(modules))


def env_path(state: str) -> str:
    return os.path.join(state, "env.sh")


def export_line(name: str, value: str) -> str:
    if name in PREPEND:
        return f'export {name}={shlex.quote(value)}"${{{name}:+:${name}}}"'
    return f"export {name}={shlex.quote(value)}"


def apply_env(env: Dict[str, str], extra: Dict[str, str]) -> Dict[str, str]:
    """``env`` as it is after sourcing the lines for ``extra`` (for the proof step)."""
    out = dict(env)
    for k, v in extra.items():
        out[k] = f"{v}:{env[k]}" if k in PREPEND and env.get(k) else v
    return out


def env_step(state: str, extra: Dict[str, str]) -> Tuple[Optional[PutFile], List[str]]:
    """A step writing ``extra`` into env.sh (keeping its other lines), and the export lines."""
    if not extra:
        return None, []
    path = env_path(state)
    lines = [export_line(k, v) for k, v in sorted(extra.items())]
    # A FIFO, device or symlink at env.sh is refused (UnsafeFile), never read or replaced.
    old: Optional[str] = read_text_or_none(path, SMALL_CAP, follow=False)
    keep: List[str] = []
    for line in (old or "").splitlines():
        m = _EXPORT.match(line)
        if line.startswith("#") or (m and m.group(1) in extra):
            continue
        if line.strip():
            keep.append(line)
    content = HEADER.format(path=path) + "\n".join(keep + lines) + "\n"
    new_sha = hashlib.sha256(content.encode()).hexdigest()
    step = PutFile(path=path, root=state, new_sha=new_sha,
                   old_sha=sha256_or_none(path) if old is not None else None, content=content)
    return step, lines
