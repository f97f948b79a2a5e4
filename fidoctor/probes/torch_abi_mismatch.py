"""torch-abi-mismatch: a compiled module needs libtorch/c10 symbols the target's torch lacks.

What: a cached JIT module (FlashInfer ≤ 0.3 linked them against torch) or a
prebuilt one (0.2.x AOT kernels, ``flashinfer_kernels.abi3.so``,
flashinfer-jit-cache) leaves torch-namespace C++ symbols undefined that no
``torch/lib/libtorch*.so`` / ``libc10*.so`` of the target defines (ELF
``.dynsym`` of the module, ``.gnu.hash`` lookups in torch's libraries). When
torch defines the same symbol with the other ``std::string`` ABI
(``…RKSsb`` vs ``…RKNSt7__cxx1112basic_string…``) the module was built with
the other ``-D_GLIBCXX_USE_CXX11_ABI``. Cached modules in a workspace the
target's FlashInfer never loads from (a 0.2.x leftover under 0.7.x: the
unversioned layout, another version's dir) are not judged: the target cannot
fail on them and never rebuilds them (``cache-stale-version`` lists those dirs).
Why: loading fails with ``undefined symbol: _ZN5torch3jit17parseSchemaOrNameERKSsb``
(FI#911, FI#382); for the AOT wheel FlashInfer then silently falls back to JIT
(``Prebuilt kernels not found, using JIT backend``), for cached modules the
server dies at import.
Fix: rebuild the cached module with this torch (``quarantine-module``:
FlashInfer passes torch's own ABI flag when it rebuilds); for prebuilt
kernels, install the FlashInfer wheel built for this torch version and ABI.

``data`` keys: so, module, module_dir (cached modules), kind (cached |
prebuilt), missing (≤ 20 names), missing_count, abi_twins, torch_lib, affects
(the module's name for cached modules, else []).
"""

from __future__ import annotations

from typing import Iterable

from fidoctor.model import Finding, Fix, ProbeInconclusive
from fidoctor.probes._facts import unused_workspaces
from fidoctor.snapshot import Snapshot

ID = "torch-abi-mismatch"
REQUIRES = ("torch_abi",)
CAUSE = True


def check(snap: Snapshot) -> Iterable[Finding]:
    ta = snap.data("torch_abi")
    unused = [w.rstrip("/") + "/" for w in unused_workspaces(snap)]
    mods = {so: m for so, m in (ta.get("modules") or {}).items() if m.get("needs")
            and not (m.get("kind") == "cached" and m.get("module_dir")
                     and (str(m["module_dir"]).rstrip("/") + "/").startswith(tuple(unused)))}
    if mods and not ta.get("torch_lib"):
        raise ProbeInconclusive(f"{len(mods)} module(s) need torch symbols, but the target's "
                                "torch/lib was not found")
    for so, m in sorted(mods.items()):
        if m.get("error") or not m.get("missing"):
            continue
        twins = m.get("abi_twins") or {}
        n = m.get("missing_count", len(m["missing"]))
        evidence = [f"{so} (NEEDED libtorch/libc10) leaves {m.get('needs')} torch symbol(s) "
                    f"undefined; {n} of them are defined by none of {ta['torch_lib']}/"
                    "libtorch*.so, libc10*.so:"]
        evidence += [f"  {s}" for s in m["missing"][:6]]
        if n > 6:
            evidence.append(f"  … and {n - 6} more")
        abi = bool(twins)
        if abi:
            miss, twin = next(iter(twins.items()))
            old = "Ss" in miss and "__cxx11" not in miss
            evidence.append(f"torch defines the other std::string ABI's twin {twin}: the module "
                            f"was built with -D_GLIBCXX_USE_CXX11_ABI={0 if old else 1}, torch "
                            f"with {1 if old else 0}")
        fixes = []
        if m.get("kind") == "cached" and m.get("module_dir"):
            fixes.append(Fix(id="quarantine-module", safety="safe",
                             description=f"Rebuild {m.get('module')} against this torch "
                             "(FlashInfer passes torch's own ABI flag)",
                             commands=[f"fidoctor fix --only {ID}"]))
        else:
            fixes.append(Fix(description="Install the FlashInfer wheel built for this torch "
                             "version and C++ ABI (or build it from source against it)",
                             safety="caution"))
        what = "C++ ABI mismatch" if abi else "torch version mismatch"
        yield Finding(
            id=ID, severity="error", subject=so, evidence=evidence, fixes=fixes,
            title=f"{m.get('module')} ({m.get('kind')}) needs {n} torch symbol(s) the target's "
                  f"torch does not export ({what}): loading it fails",
            data={"so": so, "module": m.get("module"), "module_dir": m.get("module_dir"),
                  "kind": m.get("kind"), "missing": m["missing"], "missing_count": n,
                  "abi_twins": twins, "torch_lib": ta.get("torch_lib"),
                  "affects": [m["module"]] if m.get("kind") == "cached" else []})
