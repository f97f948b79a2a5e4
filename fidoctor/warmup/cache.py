"""``--check`` and ``--once``: the cache as the probes see it.

``--check`` gathers the ``cache``, ``processes``, ``locks`` and ``jitlog``
sections (with ``--python`` also what the ELF probes read) and runs the probes:
a module is *incomplete* exactly when ``diagnose`` reports
``cache-incomplete-module`` for it (the one definition), so the two never
disagree. A module whose complete ``.so`` the target failed to load (0.2.0–0.2.5:
``Loading JIT ops`` and no ``Finished``) is *load-failed* exactly when diagnose
reports ``jit-log-unfinished`` with ``verdict: load-failed`` for it (its cause,
when the ELF probes name one, rides along as ``caused_by``): never ``ok``, and
never incomplete (rebuilding gives the same file). With ``--python``, a
complete ``.so`` that diagnose says the target cannot load (torch-abi-mismatch,
cudart-missing-symbol, severity error) is *unloadable*. A module dir that a live
process builds, or whose lock a live process holds, is *busy* (a loadable one
too: a server loading it waits on that lock; its ``complete`` stays true); one with
neither a ``.so`` nor build files is *empty* (FlashInfer starts it from
scratch). ``--clear-incomplete`` is the fix planner's business
(``fidoctor.fixes._clear``), not ours.

``--once`` must cost nothing on a warm container start: the flag file records
each module's ``.so`` path, size and mtime, the target's flashinfer and torch
package files (size, mtime, inode: a ``pip install`` of another release replaces
them) and the build environment FlashInfer writes into build.ninja (``expect``,
see ``build_env``); when all of it is unchanged and every ``.so`` still an ELF,
nothing else is looked at (no torch import in the target). Any change sends the
run down the full path, which asks ninja whether this environment would rebuild.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from fidoctor.errors import FidoctorError
from fidoctor.fsutil import elf_header_problem
from fidoctor.model import Finding
from fidoctor.textsafe import shown

INCOMPLETE = "cache-incomplete-module"
UNFINISHED = "jit-log-unfinished"
CHECK_SECTIONS = ["cache", "processes", "locks", "jitlog"]
CAUSE_SECTIONS = ["target", "toolkit", "elf", "cudart", "torch_abi"]  # the ELF probes'
# A complete .so that the ELF probes (with --python) say the target cannot load: never "ok".
UNLOADABLE_BY = ("torch-abi-mismatch", "cudart-missing-symbol")
FLAG_VERSION = 3  # 3: package files and build environment recorded


@dataclass
class CacheCheck:
    """The rows of ``--check`` and the findings behind them."""

    workspaces: List[Dict[str, Any]] = field(default_factory=list)
    findings: List[Finding] = field(default_factory=list)
    snapshot: Any = None

    @property
    def exit_code(self) -> int:
        return 1 if self.findings else 0

    def to_dict(self) -> Dict[str, Any]:
        return {"workspaces": self.workspaces, "findings": [f.to_dict() for f in self.findings]}


def gather(env: Mapping[str, str], python: Optional[str] = None) -> Any:
    """A snapshot of the cache, its JIT logs and the live builders/locks on it; with
    ``python``, also what the ELF probes need to name why a module failed to load (one
    query of that interpreter; without it no target is started)."""
    from fidoctor.snapshot.context import build_context
    from fidoctor.snapshot.runner import gather_snapshot

    ctx = build_context(python=python, env=dict(env))
    return gather_snapshot(ctx, only=CHECK_SECTIONS + (CAUSE_SECTIONS if python else []))


def check(env: Mapping[str, str], snap: Any = None, python: Optional[str] = None) -> CacheCheck:
    """Every module of every workspace, judged by the probes (see the module doc)."""
    from fidoctor.diagnosis import diagnose
    from fidoctor.probes._facts import builders, lock_holders_of, so_problem, workspaces

    snap = snap if snap is not None else gather(env, python)
    diag = diagnose(snap)
    bad = {os.path.normpath(f.data.get("module_dir") or ""): f
           for f in diag.findings if f.id == INCOMPLETE}
    unloadable = {os.path.normpath(f.data.get("module_dir") or ""): f
                  for f in diag.findings
                  if f.id == UNFINISHED and f.data.get("verdict") == "load-failed"}
    cannot_load = {os.path.normpath(f.data.get("module_dir") or ""): f
                   for f in diag.findings
                   if f.id in UNLOADABLE_BY and f.severity == "error" and f.data.get("module_dir")}
    for k in list(bad) + list(unloadable):
        cannot_load.pop(k, None)
    out = CacheCheck(findings=list(bad.values()) + list(unloadable.values())
                     + list(cannot_load.values()), snapshot=snap)
    for ws in workspaces(snap):
        rows = []
        for mod in ws.get("modules", []):
            path = os.path.normpath(mod["path"])
            so = mod.get("so") or {}
            problem = so_problem(mod) if not mod.get("error") else mod["error"]
            state, why = "ok", ""
            if path in bad:
                state, why = "incomplete", bad[path].data.get("problem") or problem or ""
            elif path in unloadable:
                f = unloadable[path]
                state, why = "load-failed", f.title + (
                    f" (caused by {f.caused_by})" if f.caused_by else "")
            elif path in cannot_load:  # diagnose: loading it fails (a torch/cudart symbol)
                state, why = "unloadable", f"{cannot_load[path].id}: {cannot_load[path].title}"
            else:
                # A live builder or lock holder makes a module busy, a loadable one too: a
                # server that loads it waits on that lock first (diagnose: build-lock-held);
                # "ok" there was a promise --check could not keep. Found by QA.
                who = builders(snap, path)
                holders = lock_holders_of(snap, mod["name"], ws["path"])
                if who or holders:
                    state = "busy"
                    why = (f"pid {who[0]['pid']} ({who[0].get('name')}) works in it" if who
                           else f"its lock is held by pid {holders[0]}")
                elif problem is not None:
                    state, why = "empty", problem or ""
            rows.append({"name": mod["name"], "dir": mod["path"], "state": state,
                         "complete": state == "ok" or (state == "busy" and problem is None),
                         "problem": why or None,
                         "size": so.get("size"), "mtime": so.get("mtime")})
        out.workspaces.append({"path": ws["path"], "version": ws.get("version"),
                               "arch": ws.get("arch"), "modules": rows})
    return out


def render_check(result: CacheCheck, now: float) -> List[str]:
    lines = []
    for w in result.workspaces:
        good = [m for m in w["modules"] if m["state"] == "ok"]
        bad = [m for m in w["modules"] if m["state"] == "incomplete"]
        lines.append(f"{w['path']} (version {w.get('version') or '?'}, arch {w.get('arch') or '?'}):"
                     f" Found {len(good)} compiled kernel(s), {len(bad)} incomplete")
        for m in good:
            age = (now - m["mtime"]) / 3600 if m["mtime"] else 0
            lines.append(f"  ok          {(m['size'] or 0) / 1e6:7.1f} MB  {age:6.1f} h  {m['name']}")
        for m in w["modules"]:
            if m["state"] != "ok":
                lines.append(f"  {m['state'].upper():<10}  {m['problem']}: {m['name']}")
    if not result.workspaces:
        lines.append("no FlashInfer workspace found")
    n = sum(f.id == INCOMPLETE for f in result.findings)
    if n:
        lines.append(f"{n} {INCOMPLETE} finding(s): move them aside with "
                     "`fidoctor warmup --clear-incomplete` (undo: fidoctor undo)")
    n_failed = sum(f.id == UNFINISHED for f in result.findings)
    if n_failed:
        lines.append(f"{n_failed} module(s) built but failed to load "
                     f"({UNFINISHED}): a rebuild gives the same file; `fidoctor diagnose` "
                     "names why and what to do")
    n_unl = len(result.findings) - n - n_failed
    if n_unl:
        lines.append(f"{n_unl} module(s) the target cannot load ({', '.join(UNLOADABLE_BY)}): "
                     "`fidoctor diagnose` names why and what to do")
    return [shown(line) for line in lines]  # module names can hold anything but / and NUL


def _so_sig(path: str) -> Optional[List[float]]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _pkg_sig(path: str) -> Optional[List[int]]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def build_env(env: Mapping[str, str]) -> Dict[str, str]:
    """What FlashInfer writes into build.ninja from the environment (the toolkit, the
    compilers, the extra flags), with the toolkit resolved (a re-pointed /usr/local/cuda
    link is another toolkit): a change means ninja would rebuild the cached modules."""
    import shutil

    from fidoctor.cachebundle.target import BUILD_ENV

    out = {k: env[k] for k in BUILD_ENV + ("CUDA_HOME", "CUDA_PATH") if k in env}
    home = env.get("CUDA_HOME") or env.get("CUDA_PATH")
    if not home:
        nvcc = shutil.which("nvcc", path=env.get("PATH"))
        home = os.path.dirname(os.path.dirname(nvcc)) if nvcc else "/usr/local/cuda"
    out["toolkit_realpath"] = os.path.realpath(home)
    return out


def once_satisfied(flag: str, expect: Optional[Dict[str, Any]] = None) -> Optional[str]:
    """Why the ``--once`` flag still holds (None: it does not; build).

    Holds when the flag was written by this flag format, for the same
    request (``expect``: python, modules, arch, build environment), every
    ``.so`` it lists is unchanged (size, mtime) and still starts with an ELF
    header, and the target's flashinfer and torch package files are the ones
    it recorded. Reads a few bytes per module: no target interpreter is started.
    """
    from fidoctor.safeio import read_text_or_none

    try:  # regular files only, never blocking: a FIFO named as the flag hung here
        doc = json.loads(read_text_or_none(flag, 1 << 20, follow=True) or "{}")
    except (FidoctorError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("flag_version") != FLAG_VERSION:
        return None
    for k, v in (expect or {}).items():
        if doc.get(k) != v:
            return None
    sos = doc.get("sos") or {}
    if not sos:
        return None
    for path, sig in sos.items():
        if _so_sig(path) != sig or elf_header_problem(path) is not None:
            return None
    pkgs = doc.get("packages")
    if not isinstance(pkgs, dict) or not pkgs:  # the target's FlashInfer/torch: unknown
        return None
    for path, sig in pkgs.items():
        if _pkg_sig(path) != sig:  # another release installed (or removed) since
            return None
    return f"{flag} is valid and all {len(sos)} modules are cached: nothing to do"


def write_flag(flag: str, result: Dict[str, Any], expect: Dict[str, Any]) -> None:
    """Record the request and every module's ``.so`` signature, atomically."""
    sos = {}
    for m in result.get("modules", []):
        so = os.path.join(m.get("module_dir") or "", f"{m.get('name')}.so")
        sig = _so_sig(so) if m.get("module_dir") else None
        if sig is not None:
            sos[so] = sig
    from fidoctor.safeio import write_atomic

    try:
        os.makedirs(os.path.dirname(os.path.abspath(flag)), exist_ok=True)
    except OSError as e:
        raise FidoctorError(f"cannot write --once flag {flag}: {e.strerror or e}") from None
    pkgs = {}
    for path in ((result.get("target") or {}).get("package_files") or {}).values():
        psig = _pkg_sig(path) if isinstance(path, str) else None
        if psig is not None:
            pkgs[path] = psig
    doc = dict(expect, flag_version=FLAG_VERSION, time=time.time(), sos=sos, packages=pkgs,
               module_names=[m.get("name") for m in result.get("modules", [])])
    write_atomic(flag, json.dumps(doc).encode(), mode=0o644, what="--once flag")
