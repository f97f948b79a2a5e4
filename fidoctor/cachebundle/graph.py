"""One module's build graph as the target's ninja sees it: commands, outputs, deps, inputs.

``compdb`` asks the real ninja (``ninja -t compdb``: every edge with inputs,
its fully expanded command and its first output) so fidoctor never
re-implements ninja's variable expansion; the command hashes written into
``.ninja_log`` are hashes of exactly these strings. FlashInfer's rules use no
response files, so ``compdb``'s command is the one ninja hashes; a
``build.ninja`` that declares ``rspfile`` is refused.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, TypedDict

from fidoctor import proc
from fidoctor.errors import FidoctorError

COMPDB_TIMEOUT_S = 10.0


class Edge(TypedDict):
    output: str    # absolute path (FlashInfer ≥ 0.6.1 writes absolute outputs)
    file: str      # first input
    command: str   # as ninja evaluates it


def compdb(ninja: str, build_file: str, env: Optional[Dict[str, str]] = None,
           timeout: float = COMPDB_TIMEOUT_S) -> List[Edge]:
    """Every edge of ``build_file`` with its expanded command (the real ninja's answer)."""
    with open(build_file, "rb") as f:
        if b"rspfile" in f.read():
            raise FidoctorError(f"{build_file} uses response files; fidoctor cannot compute "
                                "ninja's command hash for it")
    d = os.path.dirname(build_file)
    r = proc.run([ninja, "-C", d, "-f", build_file, "-t", "compdb"], timeout=timeout, env=env)
    if not r.ok:
        raise FidoctorError(f"ninja -t compdb on {build_file}: {r.describe()}")
    try:
        rows = json.loads(r.stdout)
    except ValueError:
        raise FidoctorError(f"ninja -t compdb on {build_file} printed no JSON") from None
    out: List[Edge] = []
    for row in rows:
        output = row.get("output", "")
        if not os.path.isabs(output):
            output = os.path.normpath(os.path.join(row.get("directory", d), output))
        out.append({"output": output, "file": row.get("file", ""),
                    "command": row.get("command", "")})
    return out
