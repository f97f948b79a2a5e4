"""flashinfer-not-installed: no FlashInfer in the target and no JIT cache on disk.

What: the target interpreter has no ``flashinfer-python`` and there is no
FlashInfer cache under the workspace base. Why: there is nothing to diagnose,
and a user who expected FlashInfer here is probably pointing fidoctor at the
wrong environment. Info, and the verdict is "not checked" (exit 2, never
"healthy"): nothing about FlashInfer's JIT could be judged here.
Fix: none needed; to diagnose a serving environment, point fidoctor at it
(``--python <venv>/bin/python`` or ``--pid <server pid>``).
"""

from __future__ import annotations

from typing import Iterable

from fidoctor.model import Finding, Fix
from fidoctor.snapshot import Snapshot

ID = "flashinfer-not-installed"
REQUIRES = ("target", "cache")


def check(snap: Snapshot) -> Iterable[Finding]:
    t = snap.data("target")
    if not t.get("usable"):
        return
    pkgs = t.get("packages", {})
    if "flashinfer-python" in pkgs or "flashinfer" in pkgs or "flashinfer" in t.get("modules", {}):
        return
    cache = snap.data("cache")
    if cache.get("workspaces"):
        return
    serving = snap.data("serving")
    if not serving.get("explicit") and (serving.get("servers") or serving.get("venvs")):
        return  # FlashInfer is elsewhere on this machine: target-lacks-flashinfer says where
    yield Finding(
        id=ID,
        severity="info",
        title="nothing to diagnose: no FlashInfer in the target and no FlashInfer cache",
        subject=str(t.get("python")),
        evidence=[
            f"{t.get('python')} (Python {t.get('version')}) has no flashinfer-python",
            f"{cache.get('root')}: {cache.get('root_kind', 'absent')}",
        ],
        fixes=[Fix(description="If the server runs elsewhere, point fidoctor at it",
                   commands=["fidoctor diagnose --python /path/to/serving-venv/bin/python",
                             "fidoctor diagnose --pid <server pid>"])],
    )
