"""build-flags-debug: modules are (or will be) compiled as debug builds.

What: ``--device-debug``/``-G``/``-O0`` in the ``cuda_cflags`` of cached
``build.ninja`` files (of the workspace the target's FlashInfer loads from:
another version's leftovers are never loaded nor rebuilt), or the target's environment asks for them: since
FlashInfer 0.5, ``FLASHINFER_JIT_DEBUG=1``, or ``FLASHINFER_JIT_VERBOSE=1``
without ``FLASHINFER_JIT_DEBUG`` (verbose silently implies debug; 0.7.x still
does, ``jit/core.py``), adds ``-g -O0 --device-debug -lineinfo``.
Why: device-debug kernels run many times slower, builds take longer, and
ptxas crashes on CUTLASS sm_120 MoE templates (exit 139, xorbitsai PR#5130):
a user who only wanted build logs gets a broken or crawling server.
Fix: ``FLASHINFER_JIT_DEBUG=0`` in the server's environment (fix id
``disable-jit-debug``: fidoctor's env file; keeps VERBOSE's logs), then the
debug-built modules are rebuilt (``quarantine-module``).

``data`` keys: modules ({name: [debug flags]}), env_asks (why the
environment asks for debug builds, or null), flashinfer_version, env
({"FLASHINFER_JIT_DEBUG": "0"} when the env asks), module_dir (the one
module, when there is exactly one), affects (the debug-built module names).
"""

from __future__ import annotations

from typing import Iterable, Optional

from fidoctor.model import Finding, Fix
from fidoctor.probes._toolchain import fi_modules, flashinfer_version, vtuple
from fidoctor.snapshot import Snapshot

ID = "build-flags-debug"
REQUIRES = ("toolchain",)
CAUSE = True


def env_asks(env: dict, fi: Optional[str]) -> Optional[str]:
    """Why the target's environment makes FlashInfer build debug modules, or None."""
    dbg, verbose = env.get("FLASHINFER_JIT_DEBUG"), env.get("FLASHINFER_JIT_VERBOSE", "0")
    if dbg is not None:
        return "FLASHINFER_JIT_DEBUG=1" if dbg == "1" else None
    if verbose == "1":
        v = vtuple(fi)
        if v is not None and v < (0, 5):
            return None
        return ("FLASHINFER_JIT_VERBOSE=1 without FLASHINFER_JIT_DEBUG (FlashInfer "
                f"{fi or '0.5+'} then builds with -O0 --device-debug)")
    return None


def check(snap: Snapshot) -> Iterable[Finding]:
    mods = {n: m for n, m in fi_modules(snap).items() if m.get("debug")}
    env = snap.context.get("env") or {}
    fi = flashinfer_version(snap)
    asks = env_asks(env, fi)
    if not mods and not asks:
        return
    evidence = []
    if asks:
        evidence.append(f"the target's environment has {asks}")
    for _name, m in sorted(mods.items())[:10]:
        evidence.append(f"{m['path']}/build.ninja: cuda_cflags has {' '.join(m['debug'])}")
    if len(mods) > 10:
        evidence.append(f"… and {len(mods) - 10} more debug-built module(s)")
    fixes = [Fix(id="disable-jit-debug", safety="safe",
                 description="Set FLASHINFER_JIT_DEBUG=0 in the server's environment (VERBOSE "
                 "keeps its logs, without debug flags)",
                 commands=["export FLASHINFER_JIT_DEBUG=0"])]
    if mods:
        fixes.append(Fix(id="quarantine-module", safety="safe",
                         description=f"Then rebuild the {len(mods)} debug-built module(s)",
                         commands=[f"fidoctor fix --only {ID}"]))
    what = (f"{len(mods)} cached module(s) were built" if mods else "modules will be built")
    yield Finding(
        id=ID, severity="warning", subject=", ".join(sorted(mods))[:200] or "environment",
        evidence=evidence, fixes=fixes,
        title=f"{what} with device debug flags (-O0 --device-debug): slow kernels, and "
              "ptxas may crash",
        data={"modules": {n: m["debug"] for n, m in sorted(mods.items())}, "env_asks": asks,
              "flashinfer_version": fi,
              "env": {"FLASHINFER_JIT_DEBUG": "0"} if asks else {},
              "module_dir": next(iter(mods.values()))["path"] if len(mods) == 1 else None,
              "affects": sorted(mods)})
