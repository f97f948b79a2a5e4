"""target-python-unusable: the serving environment's interpreter cannot be queried.

What: the interpreter fidoctor was pointed at (``--python``, ``--pid``'s exe,
the active venv) is missing, not executable, crashes or hangs on a trivial
script. Why: every target-side fact (torch, flashinfer, pip's CUDA runtime)
comes from it, so most probes go blind. Fix: point ``--python`` at the
server's interpreter, e.g. ``fidoctor diagnose --python /path/to/venv/bin/python``.
"""

from __future__ import annotations

from typing import Iterable

from fidoctor.model import Finding, Fix
from fidoctor.snapshot import Snapshot

ID = "target-python-unusable"
REQUIRES = ("target",)


def check(snap: Snapshot) -> Iterable[Finding]:
    t = snap.data("target")
    if t.get("usable"):
        return
    evidence = [f"{t.get('python')}: {t.get('reason')}"]
    if t.get("stderr_tail"):
        evidence.append("stderr: " + t["stderr_tail"].strip().splitlines()[-1][:300])
    yield Finding(
        id=ID,
        severity="warning",
        title="the target Python interpreter cannot be queried; target-side checks are blind",
        subject=str(t.get("python")),
        evidence=evidence,
        fixes=[Fix(description="Point fidoctor at the serving environment's interpreter",
                   commands=["fidoctor diagnose --python /path/to/serving-venv/bin/python",
                             "fidoctor diagnose --pid <server pid>"])],
    )
