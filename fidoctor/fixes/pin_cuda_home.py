"""pin-cuda-home: keep the CUDA_HOME string the cache was built with, so it stays valid.

What: writes ``CUDA_HOME=<recorded>`` (the finding's ``pin_cuda_home``: the
``cuda_home`` every differing module recorded, a toolkit with a runnable
``bin/nvcc`` whose realpath is the toolkit the target resolves now) into
fidoctor's env file.
Why: FlashInfer writes the CUDA_HOME *string* into ``build.ninja``; another
string for the same toolkit (``/usr/local/cuda`` vs ``/usr/local/cuda-13.0``)
rewrites the file and recompiles every cached module (FlashInfer#4884, PR#3579).
Safety: safe. Same toolkit, same compiler, nothing on disk changes.
Undo: ``fidoctor undo`` takes the env file back. Finding data read: pin_cuda_home.
"""

from __future__ import annotations

import os

from fidoctor.fixes import FixContext, NotApplicable, Plan
from fidoctor.fixes._envfile import env_plan
from fidoctor.model import Finding

ID = "pin-cuda-home"
SAFETY = "safe"


def plan(finding: Finding, ctx: FixContext) -> Plan:
    home = finding.data.get("pin_cuda_home")
    if not isinstance(home, str) or not home:
        raise NotApplicable("the cached modules recorded more than one toolkit, or another one")
    if not os.access(os.path.join(home, "bin", "nvcc"), os.X_OK):
        raise NotApplicable(f"{home}/bin/nvcc is not runnable any more")
    return env_plan(finding, ID, SAFETY,
                    f"{home} is the same toolkit under the string the cache was built with",
                    {"CUDA_HOME": home},
                    ["every process that starts the server must use the same string (a second "
                     "launcher with another CUDA_HOME makes the rebuilds ping-pong)"])
