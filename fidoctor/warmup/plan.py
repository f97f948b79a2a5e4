"""``warmup --plan``: what the target would JIT on this GPU/arch, how long it would take; nothing built.

The target is asked (the child's describe mode: one FlashInfer import, no
build.ninja written) for each module's name, dir and whether FlashInfer's own
lookup finds a prebuilt artifact (``data/aot``, the flashinfer-jit-cache
package). Each module is then one of:

* ``prebuilt``: loaded from the package, never compiled here;
* ``cached``: a loadable ``.so`` that ninja (``-n -d explain``) finds current;
* ``rebuild``: a loadable ``.so`` that ninja would rebuild with the build.ninja
  FlashInfer would write in this environment (captured in the target, not
  written; the reason is said; warmup leaves it alone unless ``--rebuild``);
* ``build``: compiled on first use.

ETAs come from the table shared with the live watch (``flashinfer.eta``),
refined by this machine's ``.ninja_log`` history. The module-parallel figure is
``max(longest module, total work / jobs)``: the schedule warmup approaches.
"""

from __future__ import annotations

import os
import shutil
from typing import Any, Dict, List, Optional

from fidoctor.fsutil import elf_header_problem


def make_plan(python: str, modules: Optional[str], arch: Optional[str], disable_sm90: bool,
              jobs: Optional[int], env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """The plan as a JSON-able dict (see the module doc)."""
    from fidoctor.flashinfer.eta import History, estimate
    from fidoctor.flashinfer.layout import discover_workspaces
    from fidoctor.warmup import jobs as jobs_mod
    from fidoctor.warmup import specs as specs_mod
    from fidoctor.warmup.parallel import short_reason, would_rebuild
    from fidoctor.warmup.runner import describe, is_sm90, target_env

    cenv = target_env(python, arch, env)
    candidates = specs_mod.select(modules, sm90=True, disable_sm90=disable_sm90)
    info = describe(python, cenv, candidates, ninja_text=True)
    sm90 = is_sm90(cenv.get("FLASHINFER_CUDA_ARCH_LIST"), info.get("gpu"))
    chosen = specs_mod.select(modules, sm90=sm90, disable_sm90=disable_sm90)
    total, why, _ = jobs_mod.budget([m.mem_class for m in chosen], jobs)
    cores = jobs_mod.cores()
    ws = (info.get("workspace") or "").rstrip("/")
    root = os.path.dirname(os.path.dirname(ws)) if ws else ""
    history = History.gather([w["path"] or "" for w in discover_workspaces(root)]) if root else None
    arch_dir = os.path.basename((info.get("workspace") or "").rstrip("/")) or None
    ninja = shutil.which("ninja", path=cenv.get("PATH")) or "ninja"
    rows: List[Dict[str, Any]] = []
    for m in chosen:
        ev = info["specs"].get(m.key)
        if ev is None:
            rows.append({"key": m.key, "state": "error",
                         "why": info["spec_errors"].get(m.key) or "not generated"})
            continue
        row: Dict[str, Any] = {"key": m.key, "name": ev.get("name"),
                               "module_dir": ev.get("module_dir")}
        so = ev.get("so_path") or ""
        if ev.get("aot"):
            row.update(state="prebuilt", why="provided by " + ", ".join(ev["aot"])[:300])
        elif ev.get("compiled") and os.path.exists(so) and elf_header_problem(so) is None:
            again, reasons = would_rebuild(ninja, ev["module_dir"], cenv, ev.get("ninja_text"))
            state = {False: "cached", True: "rebuild", None: "unknown"}[again]
            row.update(state=state, why="; ".join(short_reason(r) for r in reasons[:2])
                       or "ninja: no work to do")
        else:
            row.update(state="build", why="no loadable .so" if not ev.get("compiled")
                       else f".so unusable ({elf_header_problem(so)})")
        if row["state"] in ("build", "rebuild"):
            est = estimate(ev.get("name") or m.key, arch=arch_dir, cores=cores, jobs=total,
                           history=history)
            work = estimate(ev.get("name") or m.key, arch=arch_dir, cores=1, jobs=1,
                            history=history)
            if est is not None:
                row.update(eta_s=round(est.seconds, 1), eta_low_s=round(est.low, 1),
                           eta_high_s=round(est.high, 1), eta_basis=est.basis,
                           eta_source=est.source)
            if work is not None:
                row["work_s"] = round(work.seconds, 1)
        rows.append(row)
    todo = [r for r in rows if r["state"] in ("build", "rebuild") and "eta_s" in r]
    longest = max((r["eta_s"] for r in todo), default=0.0)
    work = sum(r.get("work_s", 0.0) for r in todo)
    return {
        "schema_version": 1, "python": python, "flashinfer": info.get("version"),
        "arch": cenv.get("FLASHINFER_CUDA_ARCH_LIST") or arch_dir, "gpu": info.get("gpu"),
        "jobs": total, "jobs_reason": why, "modules": rows,
        "eta_parallel_s": round(max(longest, work / max(cores, 1)), 1) if todo else 0.0,
        "eta_sequential_s": round(sum(r["eta_s"] for r in todo), 1),
        "eta_note": "compile time only; one torch + FlashInfer import comes on top",
    }


def render(plan: Dict[str, Any]) -> List[str]:
    lines = [f"warmup plan for {plan['python']} (FlashInfer {plan['flashinfer']}, arch "
             f"{plan['arch'] or '?'}): {plan['jobs']} jobs ({plan['jobs_reason']})"]
    for r in plan["modules"]:
        eta = f"  ETA {r['eta_s']:.0f} s ({r['eta_low_s']:.0f}–{r['eta_high_s']:.0f})" \
            if "eta_s" in r else ""
        lines.append(f"  {r['state']:<9} {r['key']:<24}{eta}  {r['why']}")
    todo = [r for r in plan["modules"] if r["state"] in ("build", "rebuild")]
    if todo:
        lines.append(f"{len(todo)} module(s) to compile: ≈ {plan['eta_parallel_s']:.0f} s "
                     f"module-parallel, ≈ {plan['eta_sequential_s']:.0f} s one at a time "
                     f"({plan['eta_note']}); nothing was built")
    else:
        lines.append("nothing to compile; nothing was built")
    return lines
