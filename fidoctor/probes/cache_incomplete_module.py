"""cache-incomplete-module: a module dir with build files but no loadable ``.so``.

What: ``cached_ops/<module>/`` holds ``build.ninja`` or objects, but its ``.so``
is missing, empty, truncated or not ELF, no live process is building it and
none holds its lock. A loadable ``.so`` beside a leftover ``*.o.d`` is *not*
this finding: the module loads as it is (ninja judges the objects on the next build).
Why: a build killed mid-way (OOM killer, Ctrl-C, a restarted server) leaves
this behind. A bad ``.so`` fails at load with ``invalid ELF header``
(FlashInfer#2010); a missing one makes the next start rebuild from a state
ninja may misjudge (stale ``.o.d``, no ``.ninja_log``).
Fix: move that one module dir aside (never the whole cache) so the next start
rebuilds it cleanly. Safe: nothing is deleted, ``fidoctor undo`` restores it.
"""

from __future__ import annotations

from typing import Iterable

from fidoctor.flashinfer.modnames import short_name
from fidoctor.model import Finding, Fix
from fidoctor.paths import quarantine_dir
from fidoctor.probes._facts import (
    builders,
    has_build_files,
    iter_modules,
    lock_holders_of,
    quote,
    so_problem,
)
from fidoctor.snapshot import Snapshot

ID = "cache-incomplete-module"
REQUIRES = ("cache",)


def check(snap: Snapshot) -> Iterable[Finding]:
    for ws, mod in iter_modules(snap):
        if mod.get("error"):
            continue
        problem = so_problem(mod)
        if problem is None or not has_build_files(mod):
            continue
        if builders(snap, mod["path"]) or lock_holders_of(snap, mod["name"], ws["path"]):
            continue  # being built (or loaded) right now: the process and lock probes speak
        bad_so = problem != "no .so"
        evidence = [f"{mod['path']}: {problem}"]
        if mod.get("build_ninja"):
            evidence.append("build.ninja present")
        if mod.get("objects") or mod.get("cuda_compile_edges"):
            edges = mod.get("cuda_compile_edges")
            total = f" of {edges} compile steps" if edges else ""
            evidence.append(f"{mod.get('objects', 0)} object file(s){total} present")
        if mod.get("stale_depfiles"):
            names = [d[len(mod["name"]):].lstrip("_") or d for d in mod["stale_depfiles"][:3]]
            evidence.append(
                f"{len(mod['stale_depfiles'])} leftover depfile(s) (a compile was running when "
                f"the build died): {', '.join(names)}"
            )
        if mod.get("ninja_lock"):
            evidence.append(".ninja_lock left behind (ninja did not exit cleanly)")
        evidence.append("no live process is building it")
        q = quarantine_dir(mod["path"], "<timestamp>")
        yield Finding(
            id=ID,
            severity="error" if bad_so else "warning",
            title=(
                f"module {short_name(mod['name'])} has a broken .so ({problem}); loading it will fail"
                if bad_so
                else f"module {short_name(mod['name'])} was never finished: build files but no .so"
            ),
            subject=mod["path"],
            evidence=evidence,
            fixes=[
                Fix(
                    id="quarantine-module",
                    description="Move this one module dir aside so the next start rebuilds it "
                    "(the rest of the cache stays warm; fidoctor undo brings it back)",
                    commands=[
                        f"fidoctor fix --only {ID}",
                        f"# by hand: mkdir -p {quote(q)} && mv {quote(mod['path'])} {quote(q)}/",
                    ],
                    safety="safe",
                )
            ],
            data={"module_dir": mod["path"], "module": mod["name"], "workspace": ws["path"],
                  "problem": problem},
        )
