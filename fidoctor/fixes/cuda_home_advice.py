"""cuda-home-advice: for an unusable CUDA toolkit, the exact ``CUDA_HOME=`` line — no change.

What: points at a complete toolkit found on this machine (the finding's
``suggested_cuda_home``) with the exact ``export CUDA_HOME=…`` line, or says
that none is installed. It changes nothing automatically.
Why: which toolkit a server builds with is the user's decision (it decides
the runtime the modules need, see cudart-missing-symbol); modules whose
build.ninja recorded the bad cuda_home are rebuilt once it is set.
Safety: safe (advice). Finding data read: suggested_cuda_home, toolkit_path,
missing, module_dirs.
"""

from __future__ import annotations

import shlex

from fidoctor.fixes import FixContext, NotApplicable, Plan
from fidoctor.model import Finding

ID = "cuda-home-advice"
SAFETY = "safe"
FINDINGS = ("cuda-toolkit-unusable",)


def plan(finding: Finding, ctx: FixContext) -> Plan:
    d = finding.data
    if d.get("missing") == ["libcuda"]:
        if (d.get("env") or {}).get("FLASHINFER_EXTRA_LDFLAGS"):
            raise NotApplicable("the toolkit builds; only -lcuda is missing and a stub exists "
                                "here (link-libcuda-stub)")
        return Plan(
            fix_id=ID, finding_id=finding.id, subject=finding.subject, safety=SAFETY,
            manual=True, why="nothing provides -lcuda to FlashInfer's link step",
            notes=["install the NVIDIA driver's libcuda.so, or a CUDA toolkit with "
                   "lib64/stubs/libcuda.so",
                   "or: export FLASHINFER_EXTRA_LDFLAGS='-L<dir holding libcuda.so>' in the "
                   "server's environment"])
    sug = d.get("suggested_cuda_home")
    missing = ", ".join(d.get("missing") or []) or "unusable"
    if sug:
        notes = [f"export CUDA_HOME={shlex.quote(sug)}",
                 "set it in the server's environment, then restart the server"]
    else:
        notes = ["no complete CUDA toolkit found here: install one (nvcc, headers, libcudart), "
                 "then: export CUDA_HOME=/usr/local/cuda-<version>"]
    mods = d.get("module_dirs") or []
    if mods:
        notes.append(f"{len(mods)} module(s) recorded the bad cuda_home and will rebuild once "
                     "it is set; fidoctor fix --only cache-incomplete-module handles leftovers")
    return Plan(
        fix_id=ID, finding_id=finding.id, subject=finding.subject, safety=SAFETY, manual=True,
        why=f"the toolkit at {d.get('toolkit_path')} cannot build ({missing}); choosing the "
            "toolkit is left to you",
        notes=notes,
    )
