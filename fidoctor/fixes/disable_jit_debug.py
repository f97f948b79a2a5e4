"""disable-jit-debug: build FlashInfer modules without device debug flags (``FLASHINFER_JIT_DEBUG=0``).

What: writes ``FLASHINFER_JIT_DEBUG=0`` into fidoctor's env file and prints
the export line. FlashInfer (0.5+) reads it before FLASHINFER_JIT_VERBOSE, so
verbose build logs stay on while ``-O0 --device-debug`` goes away.
Why: debug-built kernels are slow and ptxas crashes on some CUTLASS
templates with them; VERBOSE=1 alone turns them on.
Safety: safe. It changes only the environment of the next start; modules
already built with debug flags stay until they are rebuilt.
Undo: ``fidoctor undo`` takes the env file back. Finding data read: none.
"""

from __future__ import annotations

from fidoctor.fixes import FixContext, Plan
from fidoctor.fixes._envfile import NEXT_START, env_plan
from fidoctor.model import Finding

ID = "disable-jit-debug"
SAFETY = "safe"


def plan(finding: Finding, ctx: FixContext) -> Plan:
    mods = finding.data.get("modules") or {}
    notes = [NEXT_START]
    if mods:
        notes.append(f"{len(mods)} module(s) already built with debug flags are rebuilt once "
                     "moved aside: fidoctor fix --only build-flags-debug --use quarantine-module")
    return env_plan(finding, ID, SAFETY, "FLASHINFER_JIT_DEBUG=0 overrides the debug build "
                    "that FLASHINFER_JIT_VERBOSE=1 implies", {"FLASHINFER_JIT_DEBUG": "0"}, notes)
