"""jit-log-unfinished: the JIT log says a module build started and nothing says it ended.

What: in FlashInfer 0.2.0–0.2.5 a ``Loading JIT ops: <m>`` line with no
``Finished loading JIT ops: <m>`` after it; in 0.7.x (which never logs an end)
a ``Building JIT module <m>`` line whose module dir has no loadable ``.so``.
Why: that is exactly where a hung server's log stops. If a process is
compiling that module right now and its CPU moved over the sampling window,
it is a cold build, not a hang (info); if its compiler tree is stopped or
not moving, or nobody is building it, the build died or is stuck (error).
In 0.2.0–0.2.5 the ``Finished`` line comes after the *load*: a complete
``.so`` (a valid ELF, not truncated) behind an unfinished ``Loading`` line is a
load that failed (an undefined symbol, a C++ ABI split), not a build that never
ended; rebuilding it gives the same file. That verdict says so, points at the
ELF probe that names the cause when there is one (cudart-missing-symbol,
torch-abi-mismatch: ``caused_by``), and offers the target's own loader error.
Fix: see the other findings for the same module (stale lock, stuck build,
incomplete module); otherwise rebuild it under ``fidoctor warmup``.

In 0.2.0–0.2.5 an unfinished ``Loading`` line over a module whose torch
FileBaton nobody has open can never finish, whatever is still compiling: the
builder that held the baton is dead, and every build of the module (the
restart too) spins on it inside FlashInfer's lock; that verdict points at
``build-lock-held`` (the cause; it removes the baton).

``data`` keys: module, module_dir, log, age_s, pids (live builders), verdict
(``load-failed`` for the 0.2.x load case, ``stale-baton``), so_path, lock_path.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterable, Optional

from fidoctor.flashinfer.modnames import short_name
from fidoctor.model import Finding, Fix
from fidoctor.probes._facts import (
    age_s,
    builders,
    fmt_age,
    module_by_path,
    processes_known,
    quote,
    so_problem,
    stale_baton,
)
from fidoctor.probes._trees import stuck_trees
from fidoctor.snapshot import Snapshot
from fidoctor.snapshot.types import ModuleFacts

ID = "jit-log-unfinished"
REQUIRES = ("jitlog", "cache")


def _unfinished(entry: Dict[str, Any], mod: Optional[ModuleFacts]) -> bool:
    start = entry.get("last_start")
    if not start:
        return False
    if start["event"] == "loading":
        finish = entry.get("last_finish")
        return finish is None or finish["offset"] < start["offset"]
    # "building" (0.7.x): no end line exists; the .so is the only witness.
    return mod is not None and so_problem(mod) is not None


def check(snap: Snapshot) -> Iterable[Finding]:
    modules = module_by_path(snap)
    for log in snap.data("jitlog").get("logs", []):
        for name, entry in sorted(log.get("modules", {}).items()):
            mod_dir = os.path.normpath(os.path.join(log["workspace"], "cached_ops", name))
            mod = modules.get(mod_dir)
            if not _unfinished(entry, mod):
                continue
            start = entry["last_start"]
            age = age_s(snap, start.get("ts"))
            live = builders(snap, mod_dir)
            evidence = [f"{log['path']}: {start['line'].strip()}", f"written {fmt_age(age)} ago"]
            if start["event"] == "loading":
                evidence.append(f"no 'Finished loading JIT ops: {name}' after it")
            else:
                evidence.append(f"{mod_dir}: {so_problem(mod) if mod else 'missing'}")
            if not log.get("complete", True):
                evidence.append(f"log only read up to byte {log.get('bytes_read')} (time budget)")
            data = {"module": name, "module_dir": mod_dir, "log": log["path"], "age_s": age}
            baton = stale_baton(snap, mod_dir) if start["event"] == "loading" else None
            if baton:
                yield Finding(
                    id=ID, severity="error", subject=mod_dir,
                    data=dict(data, verdict="stale-baton", lock_path=baton,
                              pids=[p["pid"] for p in live]),
                    title=f"build of {short_name(name)} started {fmt_age(age)} ago can never "
                    "finish: its torch baton outlived a killed builder, and every build of it "
                    "waits on the baton forever (see build-lock-held)",
                    evidence=evidence + [f"{baton}: torch FileBaton, open by no process",
                                         "FlashInfer 0.2.0-0.2.5 builds through torch's "
                                         "cpp_extension, which waits on that file with no "
                                         "timeout"] + ([f"still compiling (orphans): "
                                                        f"{', '.join(str(p['pid']) for p in live[:8])}"]
                                                       if live else []),
                )
                continue
            trees = [t for t in stuck_trees(snap)
                     if os.path.normpath(t["tree"]["module_dir"]) == mod_dir]
            if live and trees and not any(
                t["sum"]["progressing"] and not t["sum"]["stopped"] for t in trees
            ):
                pids = [p for t in trees for p in t["sum"]["pids"]]
                yield Finding(
                    id=ID, severity="error", subject=mod_dir, data=dict(data, pids=pids),
                    title=f"build of {name} started {fmt_age(age)} ago and its compiler tree "
                    "is stuck (see build-process-stuck)",
                    evidence=evidence + [f"build processes not progressing: "
                                         f"{', '.join(map(str, pids[:8]))}"],
                )
                continue
            if live:
                oldest = min(p.get("create_time") or snap.taken_at for p in live)
                shown_pids = ", ".join(str(p["pid"]) for p in live[:8])
                yield Finding(
                    id=ID, severity="info", subject=mod_dir, data=dict(data, pids=[p["pid"] for p in live]),
                    title=f"{short_name(name)} is compiling now (for {fmt_age(snap.taken_at - oldest)}): "
                    "a cold build, not a hang",
                    evidence=evidence + [f"live build processes: {shown_pids}"],
                )
                continue
            if start["event"] == "loading" and mod is not None and so_problem(mod) is None:
                yield _load_failed(snap, name, mod_dir, mod, evidence, data, age)
                continue
            who = "no live process is building it" if processes_known(snap) else \
                "process table not gathered: cannot tell whether it is still building"
            yield Finding(
                id=ID,
                severity="error" if processes_known(snap) else "warning",
                title=f"build of {short_name(name)} started {fmt_age(age)} ago and never finished",
                subject=mod_dir,
                evidence=evidence + [who],
                fixes=[
                    Fix(
                        description="Rebuild the module under supervision (names the cause if "
                        "it hangs again)",
                        commands=["fidoctor warmup --modules " + name],
                        safety="safe",
                    )
                ],
                data=data,
            )


def _load_failed(snap: Snapshot, name: str, mod_dir: str, mod: ModuleFacts,
                 evidence: list, data: Dict[str, Any], age: Optional[float]) -> Finding:
    """0.2.x: ``Loading`` logged, the build produced a complete .so, ``Finished`` never came."""
    so = (mod.get("so") or {}).get("path") or os.path.join(mod_dir, name + ".so")
    python = (snap.context or {}).get("python") or "python"
    probe = (f"{quote(python)} -c 'import torch, sys; torch.ops.load_library(sys.argv[1])' "
             f"{quote(so)}")
    return Finding(
        id=ID, severity="error" if processes_known(snap) else "warning", subject=mod_dir,
        title=f"{short_name(name)} was built but failed to load ({fmt_age(age)} ago): "
        "'Loading JIT ops' without 'Finished', and its .so is complete",
        evidence=evidence + [f"{so}: a complete shared object (the build finished; "
                             "FlashInfer 0.2.0-0.2.5 logs 'Finished' only after the load)",
                             "rebuilding gives the same file: the loader refused it"],
        data=dict(data, verdict="load-failed", so_path=so),
        fixes=[Fix(description="See why the loader refuses it, in the target's own "
                   "interpreter (the error names the missing symbol or library)",
                   commands=[probe], safety="safe")],
    )
