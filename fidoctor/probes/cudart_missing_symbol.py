"""cudart-missing-symbol: a cached module needs a CUDA runtime symbol the loaded libcudart lacks.

What: a ``cached_ops/<module>/<module>.so`` leaves a ``cuda*`` symbol undefined
(e.g. ``cudaGetDriverEntryPointByVersion@libcudart.so.12``) that no libcudart
in the target's lookup scope exports. The scope is what the target loads:
torch's copy found through ``libtorch_cuda.so``'s RPATH, LD_PRELOAD, and
FlashInfer's ``$CUDA_LIB_PATH`` preload — or, with ``--pid``, what
``/proc/PID/maps`` shows is mapped.
Why: the module was compiled by a newer nvcc (12.5+) than the pip runtime
torch pins (12.4.127); its ``NEEDED libcudart.so.12`` binds by SONAME to the
copy torch already loaded, so ``torch.ops.load_library`` fails with
``undefined symbol: …, version libcudart.so.12`` (SGL#5695) or the server hangs.
Fix, safest first: preload a runtime that has the symbol for this process
only (``preload-cudart``); rebuild the module after changing toolkits
(``quarantine-module``); upgrade pip's runtime (``upgrade-pip-cudart``,
conflicts with torch's pin); point CUDA_HOME at a toolkit no newer than the
runtime; replace pip's libcudart with the toolkit's (``replace-pip-cudart``,
risky: a pip reinstall silently reverts it).

``data`` keys: module, module_dir, so_path, missing ([[name, version, file]]),
symbols, runtime_path (the libcudart chosen), runtime_version,
runtime_version_source, runtime_via, runtime_soname, provider_path (a
libcudart here that exports every missing symbol; null if none),
provider_version, cuda_lib_path (dir of provider_path when that is named
libcudart.so.12, the name FlashInfer's preload opens; else null), pip_cudart_path,
pip_package, pip_version, toolkit_path, toolkit_version, python, upgrade_spec,
loaded_source (prediction / /proc/PID/maps / --deep), affects (the module: a cause).
"""

from __future__ import annotations

from typing import Any, Dict, Iterable

from fidoctor.flashinfer import cudart as rules
from fidoctor.model import Finding, Fix
from fidoctor.paths import quarantine_dir
from fidoctor.probes._facts import quote
from fidoctor.probes._runtime import (
    lib_label,
    runtime_data,
    runtime_fixes,
    soname_path,
    toolkit_copy,
)
from fidoctor.snapshot import Snapshot

ID = "cudart-missing-symbol"
CAUSE = True  # of the module's failed load (jit-log-unfinished's 0.2.x load verdict)
REQUIRES = ("elf", "cudart")


def check(snap: Snapshot) -> Iterable[Finding]:
    cud, elf = snap.data("cudart"), snap.data("elf")
    libs = cud.get("libraries") or {}
    loaded = cud.get("loaded") or []
    via = {lib["path"]: lib.get("via", "") for lib in loaded}
    for so_path, mod, r in rules.modules_missing(elf.get("modules") or {}, loaded,
                                                 cud.get("own") or {}, libs):
        yield _finding(snap, so_path, mod, dict(r, missing=[list(m) for m in r["missing"]]),
                       libs, via)


def _finding(snap: Snapshot, so_path: str, mod: Dict[str, Any], r: Dict[str, Any],
             libs: Dict[str, Dict[str, Any]], via: Dict[str, str]) -> Finding:
    cud = snap.data("cudart")
    missing = r["missing"]
    soname = next(iter(r["bound"]), None)
    bound_path = r["bound"].get(soname) if soname else None
    runtime = dict(libs.get(bound_path or "", {}), via=via.get(bound_path or "",
                   "the module's own library search (nothing loaded it before)"))
    syms = [f"{n}@{v}" if v else n for n, v, _ in missing]
    evidence = [f"{so_path} needs {', '.join(syms)} (undefined dynamic symbol"
                f"{'s' if len(syms) > 1 else ''}, version requirement from .gnu.version_r)"]
    evidence.append(f"the target binds {soname} to {lib_label(runtime)}")
    evidence.append(f"chosen by: {runtime['via']}")
    steps = (cud.get("torch") or {}).get("steps") or []
    if len(steps) > 1 and bound_path and any(bound_path == lib.get("path") for lib in
                                    cud.get("loaded") or []):
        evidence.append("search: " + " → ".join(steps))
    evidence.append(f"{bound_path} exports no {', '.join(syms)}")
    have = set.intersection(*[set(rules.libraries_exporting(n, v, libs)) for n, v, _ in missing])
    provider = None
    if have:
        tk = toolkit_copy(cud, snap.data("toolkit"), soname)
        pick = tk["path"] if tk and tk["path"] in have else sorted(have)[0]
        provider = libs[pick]
        evidence.append(f"{soname_path(provider)} → {lib_label(provider)} on this machine exports "
                        f"{'them' if len(syms) > 1 else 'it'}")
    else:
        evidence.append(f"no libcudart found on this machine exports {', '.join(syms)}")
    data = runtime_data(snap, runtime, provider)
    data.update(module=mod.get("module"), module_dir=mod.get("module_dir"), so_path=so_path,
                missing=missing, symbols=syms, affects=[mod["module"]] if mod.get("module") else [])
    fixes = runtime_fixes(snap, data, ID)
    if mod.get("module_dir"):
        q = quarantine_dir(mod["module_dir"], "<timestamp>")
        fixes.insert(1 if fixes and fixes[0].id == "preload-cudart" else 0, Fix(
            id="quarantine-module", safety="safe",
            description="After changing the toolkit or runtime, move this module aside so it "
            "is rebuilt against it (fidoctor undo brings it back)",
            commands=[f"fidoctor fix --only {ID}",
                      f"# by hand: mkdir -p {quote(q)} && mv {quote(mod['module_dir'])} "
                      f"{quote(q)}/"]))
    return Finding(
        id=ID, severity="error", subject=so_path, evidence=evidence, fixes=fixes, data=data,
        title=f"module {mod.get('module')} needs {syms[0]}"
        f"{f' (+{len(syms) - 1} more)' if len(syms) > 1 else ''}, which the libcudart the "
        f"target loads ({runtime.get('version') or '?'}) does not export; loading it fails",
    )
