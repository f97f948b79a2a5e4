"""terminate-build-tree: stop a stuck FlashInfer build tree, then move its half-built module aside.

What: TERM → grace → KILL to every process of the tree the probe saw (by pid,
checked against its create time, plus every member of the process groups
that held only tree members), through fidoctor.kill.terminate_tree (it
SIGSTOPs the tree first and re-collects children, so no new compile step
escapes). Then, when the module has no loadable ``.so``, its dir is moved
into the quarantine so the next start rebuilds it cleanly.
Why: a stopped or orphaned compile (nvcc/cicc, GBs of RAM) holds the
module's lock forever, and every process that needs the module waits.
Safety: caution. Refused for a tree the probe saw progressing; right before
signalling, the step samples the live tree again and refuses if it burns CPU
or starts a process (a build that moves is never touched). One exception,
only when asked by name (``--use terminate-build-tree``): an *orphaned* tree
that still compiles — its server is gone, its objects are usually thrown away
(no ``.ninja_log`` gets written) and a restart would compile the same module
beside it. Then the step re-checks that it is still orphaned instead. Likewise, asked by
name, a tree thrashing at its memory limit (build-memory-thrash: it burns CPU in
reclaim, not progress); the step re-checks the live cgroup still thrashes instead. Undo cannot bring
processes back; it only moves the module dir back.
Finding data read: pids, pgids, create_times, module_dir, progressing
(build-process-stuck, build-lock-held); thrash_dir, cgroup_version (build-memory-thrash).
"""

from __future__ import annotations

import os
from typing import Any, List

from fidoctor.fixes import FixContext, NotApplicable, Plan
from fidoctor.model import Finding
from fidoctor.probes._facts import module_by_path, so_problem
from fidoctor.txn.process import Terminate
from fidoctor.txn.steps import quarantine_step

ID = "terminate-build-tree"
THRASH = "build-memory-thrash"
SAFETY = "caution"


def plan(finding: Finding, ctx: FixContext) -> Plan:
    d = finding.data
    pids = [int(p) for p in d.get("pids") or []]
    if not pids:
        raise NotApplicable("the finding names no build processes")
    orphans = bool(d.get("progressing") and d.get("orphaned") and ID in ctx.requested)
    thrash = bool(finding.id == THRASH and d.get("thrash_dir") and ID in ctx.requested)
    if finding.id == THRASH and not thrash:
        raise NotApplicable("a thrashing build is ended only when asked by name "
                            "(--use terminate-build-tree); raise its memory limit first")
    if d.get("progressing") and not (orphans or thrash):
        raise NotApplicable(
            "the build is progressing; fidoctor never stops a progressing build"
            + (" (an orphaned one only when asked: --use terminate-build-tree)"
               if d.get("orphaned") else ""))
    steps: List[Any] = [Terminate(pids=pids, create_times=dict(d.get("create_times") or {}),
                       pgids=[int(g) for g in d.get("pgids") or []],
                       module_dir=d.get("module_dir") or "", orphans_only=orphans,
                       thrash_dir=(d.get("thrash_dir") or "") if thrash else "",
                       thrash_version=int(d.get("cgroup_version") or 0))]
    mod_dir = d.get("module_dir")
    notes = ["processes cannot be brought back by undo; the module is rebuilt on next use"]
    if mod_dir and os.path.isdir(mod_dir) and not os.path.islink(mod_dir):
        mod = module_by_path(ctx.snapshot).get(os.path.normpath(mod_dir)) if ctx.snapshot else None
        if mod is None or so_problem(mod):
            # No fingerprint: the terminated build may have removed its partial outputs.
            steps.append(quarantine_step(mod_dir, ctx.txid, check_unchanged=False))
    return Plan(
        fix_id=ID, finding_id=finding.id, subject=finding.subject, safety=SAFETY,
        why=("asked for: the build thrashes at its memory cgroup's limit (the kernel reclaims "
             "and refaults its code instead of killing it); the cgroup is re-checked right "
             "before the tree is signalled") if thrash else
            ("asked for: the orphaned build still compiles, but its server is gone; it is "
             "re-checked to be orphaned right before being signalled") if orphans else
            ("the build tree made no progress (stopped, orphaned or idle) and blocks this "
             "module; it is re-checked right before being signalled"),
        steps=steps, notes=notes, modules=[mod_dir] if mod_dir else [],
    )
