"""The dynamic loader's search, as gatherers need it: ld.so.cache and the dir walk.

Shared by the ``cudart`` and ``gpu`` gatherers (libcudart, libcuda): the pure
rules live in ``fidoctor/flashinfer/cudart.py``; this adds the one command
(``ldconfig -p``, guarded) and the file-existence walk.
"""

from __future__ import annotations

import os
import platform
import shutil
from typing import Any, Dict, List, Optional, Tuple

from fidoctor import proc
from fidoctor.flashinfer import cudart as rules

LDCONFIG_TIMEOUT_S = 5.0


def ldcache(env: Dict[str, str], prefix: str) -> Dict[str, Any]:
    """``ldconfig -p`` entries whose SONAME starts with ``prefix``: {"entries": {soname: [paths]}}."""
    exe = next((p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig") if os.path.exists(p)),
               None) or shutil.which("ldconfig", path=env.get("PATH", ""))
    if not exe:
        return {"error": "ldconfig not found", "entries": {}}
    r = proc.run([exe, "-p"], timeout=LDCONFIG_TIMEOUT_S, env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"})
    if not r.ok:
        return {"error": r.describe(), "entries": {}}
    abi = {"x86_64": "x86-64", "aarch64": "AArch64", "ppc64le": "64bit"}.get(platform.machine())
    entries = rules.parse_ldconfig(r.stdout, abi or "")
    return {"entries": {k: v for k, v in entries.items() if k.startswith(prefix)}}


def search(soname: str, dirs: List[Tuple[str, str]], ldcache_entries: Dict[str, List[str]]
           ) -> Tuple[Optional[str], List[str]]:
    """ld.so's search for one NEEDED name: (path found or None, steps tried as text)."""
    steps = []
    for d, why in dirs:
        cand = os.path.join(d, soname)
        if os.path.exists(cand):
            steps.append(f"{why}: {cand} found")
            return cand, steps
        steps.append(f"{why}: {d} has no {soname}")
    hits = ldcache_entries.get(soname) or []
    if hits:
        steps.append(f"/etc/ld.so.cache: {hits[0]}")
        return hits[0], steps
    steps.append(f"/etc/ld.so.cache: no {soname}")
    for d in rules.DEFAULT_DIRS:
        cand = os.path.join(d, soname)
        if os.path.exists(cand):
            steps.append(f"default dir: {cand}")
            return cand, steps
    steps.append(f"default dirs: no {soname}")
    return None, steps
