"""set-host-compiler: build with a host compiler the toolkit accepts (``CC``/``CXX``).

What: writes ``CC=<compiler>`` (and ``CXX=<its C++ driver>``) into fidoctor's
env file and prints the export lines. FlashInfer passes ``CC`` to nvcc as
``-ccbin``; ``CXX`` compiles its .cpp files and links.
Why: nvcc's ``crt/host_config.h`` rejects compilers newer than the toolkit
knows (``unsupported GNU version!``), so every JIT build fails.
Safety: safe, and offered only for a compiler found on this machine whose
predefined macros pass the same header's guards. It changes only the
environment of the next start.
Undo: ``fidoctor undo`` takes the env file back. Finding data read: env.
"""

from __future__ import annotations

from fidoctor.fixes import FixContext, Plan
from fidoctor.fixes._envfile import env_plan, probe_env
from fidoctor.model import Finding

ID = "set-host-compiler"
SAFETY = "safe"


def plan(finding: Finding, ctx: FixContext) -> Plan:
    env = probe_env(finding, "CC", "no installed compiler passes this toolkit's host_config.h")
    return env_plan(finding, ID, SAFETY,
                    f"{env['CC']} passes the guards of {finding.data.get('host_config')} that "
                    f"reject {(finding.data.get('compiler') or {}).get('path')}", env)
