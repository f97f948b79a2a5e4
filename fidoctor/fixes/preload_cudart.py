"""preload-cudart: load a libcudart that has the missing symbols first, in the server only.

What: writes ``LD_PRELOAD=<provider>`` (prepended to any existing value) and,
for ``libcudart.so.12``, ``CUDA_LIB_PATH=<its dir>`` (FlashInfer ≥0.2.3
preloads ``$CUDA_LIB_PATH/libcudart.so.12`` itself) into fidoctor's env file,
and prints the exact ``export`` lines. No installed file changes.
Why: the module binds ``libcudart.so.12`` by SONAME to the copy loaded first;
preloading the toolkit's (newer) copy makes that the one, for this process
only — the process-scoped version of the seed users' ``cp`` over pip's file.
Safety: safe. Refused when the provider is older than the runtime it would
shadow, or its version is unknown. A running server keeps its mapped copy
until restarted; the driver must support the provider's CUDA version.
Undo: ``fidoctor undo`` takes the env file back (or restores its old bytes).
Finding data read: provider_path, provider_version, cuda_lib_path,
runtime_version, module_dir (cudart-missing-symbol / cuda-version-skew).
"""

from __future__ import annotations

import os

from fidoctor.fixes import FixContext, Plan
from fidoctor.fixes._cudart import provider, require_not_older, restart_notes
from fidoctor.fixes._envfile import env_plan
from fidoctor.model import Finding

ID = "preload-cudart"
SAFETY = "safe"


def plan(finding: Finding, ctx: FixContext) -> Plan:
    d = finding.data
    prov = provider(d)
    require_not_older(d.get("provider_version"), d.get("runtime_version"), prov)
    env = {"LD_PRELOAD": prov}
    if os.path.basename(prov) == "libcudart.so.12":
        env["CUDA_LIB_PATH"] = d.get("cuda_lib_path") or os.path.dirname(prov)
    mod = d.get("module_dir")
    return env_plan(
        finding, ID, SAFETY,
        f"the target loads libcudart {d.get('runtime_version') or '?'}, older than the code "
        f"needs; preloading {prov} ({d.get('provider_version')}) in the server's environment "
        "fixes this process only and changes no installed file",
        env, restart_notes(d, ctx), [mod] if mod else [],
    )
