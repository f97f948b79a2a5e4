"""link-libcuda-stub: give FlashInfer's link step a ``libcuda.so`` to resolve ``-lcuda``.

What: writes ``FLASHINFER_EXTRA_LDFLAGS`` (the user's value plus ``-L<dir>``
of a CUDA stub ``libcuda.so`` found on this machine, e.g. another toolkit's
``lib64/stubs``) into fidoctor's env file and prints the export line.
Why: FlashInfer links every JIT module with ``-lcuda``; with no libcuda.so in
``$cuda_home/lib64[/stubs]`` or the linker's default dirs every build ends in
``cannot find -lcuda`` / ``collect2: error: ld returned 1 exit status``.
Safety: safe: the stub is used at link time only (the module records
``libcuda.so.1`` at most, which the driver provides at run time); offered only
when such a stub exists here. It changes only the environment of the next start.
Undo: ``fidoctor undo`` takes the env file back. Finding data read: env, stub.
"""

from __future__ import annotations

from fidoctor.fixes import FixContext, Plan
from fidoctor.fixes._envfile import env_plan, probe_env
from fidoctor.model import Finding

ID = "link-libcuda-stub"
SAFETY = "safe"


def plan(finding: Finding, ctx: FixContext) -> Plan:
    env = probe_env(finding, "FLASHINFER_EXTRA_LDFLAGS",
                    "no libcuda.so stub found on this machine to link against")
    return env_plan(finding, ID, SAFETY, f"{finding.data.get('stub')} resolves -lcuda at link time",
                    env)
