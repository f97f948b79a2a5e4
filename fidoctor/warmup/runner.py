"""``run_warmup``: the whole warmup as a plain function (the CLI and ``fidoctor fix`` call it).

1. describe (only when the arch is unknown, or for --disable-sm90): the child
   imports FlashInfer in the target and reports version, GPU and modules;
2. choose the set (FA3 only when the target arch is sm90);
3. module-parallel (scheduler.py): one child reports every module's real
   name, dir and lock and writes each build.ninja when asked; we run each
   module's own ninja, several at once from one job budget, each guarded
   alone. ``--sequential`` (and FlashInfer before 0.6.1): one supervised child
   builds the set in turn; a module that stalls or times out ends that child
   and the rest continue in a fresh one. Ctrl-C stops everything.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from fidoctor.errors import FidoctorError
from fidoctor.model import Finding, Fix
from fidoctor.snapshot.context import default_python
from fidoctor.warmup import jobs as jobs_mod
from fidoctor.warmup import specs as specs_mod
from fidoctor.warmup.quarantine import move_aside
from fidoctor.warmup.result import ModuleResult
from fidoctor.warmup.supervisor import (
    Hooks,
    Interrupted,
    StartFailed,
    build_session,
    install_sigterm,
    run_child,
)

DESCRIBE_TIMEOUT = 180.0
EXIT_OK, EXIT_PROBLEMS, EXIT_CANNOT = 0, 1, 2


@dataclass
class WarmupResult:
    python: str
    target: Dict[str, Any] = field(default_factory=dict)
    modules: List[ModuleResult] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0
    unsupported: Optional[Finding] = None  # warmup-unsupported-version: nothing was built

    @property
    def findings(self) -> List[Finding]:
        head = [self.unsupported] if self.unsupported is not None else []
        return head + [m.verdict for m in self.modules if m.verdict is not None]

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        if self.unsupported is not None:
            return EXIT_CANNOT
        ok = all(m.status in ("done", "cached", "skipped") for m in self.modules)
        return EXIT_OK if ok else EXIT_PROBLEMS

    def to_dict(self) -> Dict[str, Any]:
        return {"schema_version": 1, "python": self.python, "target": self.target,
                "exit_code": self.exit_code, "interrupted": self.interrupted,
                "seconds": round(self.seconds, 1), "notes": self.notes,
                "modules": [m.to_dict() for m in self.modules],
                "findings": [f.to_dict() for f in self.findings]}


class Progress:
    """Callbacks the renderer implements; the default does nothing."""

    def note(self, text: str) -> None: ...
    def queued(self, mods: List[ModuleResult]) -> None: ...
    def start(self, m: ModuleResult, i: int, n: int) -> None: ...
    def tick(self, m: ModuleResult, elapsed: float, sample: Any) -> None: ...
    def end(self, m: ModuleResult, i: int, n: int) -> None: ...
    def inflight(self, mods: List[Tuple[ModuleResult, int, int]]) -> None: ...


def target_env(python: str, arch: Optional[str], env: Optional[Dict[str, str]]) -> Dict[str, str]:
    """The child's environment: ours (or ``env``), the target's bin dir first on PATH.

    FlashInfer runs whatever ``ninja`` PATH finds; a venv's ninja 1.13 and
    /usr/bin's 1.11 write incompatible .ninja_log versions and trigger full
    rebuilds, so the target's own bin dir goes first, as an activated venv has it.
    """
    e = dict(os.environ if env is None else env)
    bindir = os.path.dirname(python)
    path = e.get("PATH", "")
    if bindir and path.split(":")[0] != bindir:
        e["PATH"] = f"{bindir}:{path}" if path else bindir
    if arch:
        e["FLASHINFER_CUDA_ARCH_LIST"] = arch
    return e


UNSUPPORTED = "warmup-unsupported-version"


class Unsupported(Exception):
    """The target's FlashInfer is a family warmup cannot drive (the child said why)."""


def unsupported_finding(python: str, err: str, version: Optional[str]) -> Finding:
    why = err.split(": ", 1)[1] if err.startswith(UNSUPPORTED + ":") else err
    return Finding(
        id=UNSUPPORTED, severity="error", subject=python,
        title=f"fidoctor warmup cannot build with FlashInfer {version or '?'}: nothing was built",
        evidence=[why, "warmup drives FlashInfer 0.2.0-0.2.5 (load_cuda_ops: the generator "
                  "call builds and loads), 0.2.6-0.6.x and 0.7.x (JitSpec build) by probing "
                  "the installed package's API"],
        data={"version": version, "reason": why},
        fixes=[Fix(description="Warm the cache with the server itself (its first call of each "
                   "kernel builds it), watched by fidoctor, or upgrade FlashInfer to 0.2.5+",
                   commands=["fidoctor run -- <your server command>",
                             f"{python} -m pip install -U flashinfer-python"],
                   safety="caution")])


UNWRITABLE = ("Read-only file system", "Permission denied", "No space left on device",
              "Disk quota exceeded")


def start_error(python: str, err: str, env: Optional[Dict[str, str]] = None) -> FidoctorError:
    hint = "install flashinfer-python in the target, or pass --python"
    why = next((w for w in UNWRITABLE if w in err), None)
    if why:   # FlashInfer makes its workspace dirs on import: not an install problem
        e = dict(os.environ if env is None else env)
        from fidoctor.flashinfer.layout import cache_root

        root = cache_root(e)
        return FidoctorError(
            f"cannot warm up with {python}: FlashInfer cannot write its workspace {root} "
            f"({why}: {err}); a server with this environment fails the same way",
            "point FLASHINFER_WORKSPACE_BASE at a writable local dir with free space, for this "
            "command and the server; `fidoctor diagnose` names the cause (cache-not-writable, "
            "disk-space-low)")
    if "sm75" in err or "TARGET_CUDA_ARCHS" in err:
        hint = "no GPU here: pass --arch 9.0a (or set FLASHINFER_CUDA_ARCH_LIST)"
    elif "No module named" in err:
        hint = f"{python} has no FlashInfer: pass --python <serving venv>/bin/python"
    return FidoctorError(f"cannot warm up with {python}: {err}", hint)


def describe(python: str, env: Dict[str, str], mods: List[specs_mod.ModuleSpec],
             fa3_source: bool = False, ninja_text: bool = False) -> Dict[str, Any]:
    """Ask the target about FlashInfer and these modules; FidoctorError if it cannot build."""
    events = run_child(python, {"mode": "describe", "fa3_source": fa3_source,
                                "ninja_text": ninja_text,
                                "modules": [_req(m) for m in mods]}, env, DESCRIBE_TIMEOUT)
    info = next((e for e in events if e["event"] == "info"), None)
    fatal = next((e for e in events if e["event"] == "fatal"), None)
    failed = [e for e in events if e["event"] == "failed"]
    if fatal and fatal.get("stage") == "unsupported":
        raise Unsupported(fatal.get("error") or UNSUPPORTED, fatal.get("version"))
    if fatal or info is None or (failed and len(failed) == len(mods)):
        raise start_error(python, (fatal or (failed[0] if failed else {})).get("error")
                          or "no answer", env)
    info["specs"] = {e["key"]: e for e in events if e["event"] == "spec"}
    info["spec_errors"] = {e["key"]: e.get("error", "") for e in failed}
    return info


def _req(m: specs_mod.ModuleSpec) -> Dict[str, Any]:
    return {"key": m.key, "kind": m.kind, "dtype": m.dtype, "head_dim": m.head_dim}


def is_sm90(arch_list: Optional[str], gpu: Optional[List[int]]) -> bool:
    if arch_list:
        return any(a.strip().startswith("9.") for a in arch_list.replace(";", " ").split())
    return bool(gpu and gpu[0] == 9)


def run_warmup(python: Optional[str] = None, modules: Optional[str] = None,
               arch: Optional[str] = None, jobs: Optional[int] = None,
               timeout: Optional[float] = None, stall_after: float = 60.0,
               disable_sm90: bool = False, load: bool = True, orphans: str = "end",
               env: Optional[Dict[str, str]] = None,
               progress: Optional[Progress] = None, sequential: bool = False,
               rebuild: bool = False) -> WarmupResult:
    """Compile the module set in the target; never leaves a process or a half-built dir.

    Several modules at once, each by its own ninja, from one job budget
    (scheduler.py), unless ``sequential`` or the target's FlashInfer shares one
    ``.ninja_log`` between modules (before 0.6.1): then one module at a time
    in one child, as before.
    """
    progress = progress or Progress()
    python = python or default_python(dict(os.environ if env is None else env))[0]
    if not python or not os.path.exists(python):
        raise FidoctorError(f"no target interpreter ({python})", "pass --python PATH")
    if stall_after <= 0 or (timeout is not None and timeout <= 0):
        raise FidoctorError("--stall-after and --timeout must be positive")
    t0 = time.monotonic()
    cenv = target_env(python, arch, env)
    arch_list = cenv.get("FLASHINFER_CUDA_ARCH_LIST")
    info: Dict[str, Any] = {}
    if not arch_list or disable_sm90:
        # Ask the target first: its GPU decides FA3, and --disable-sm90 reads its source.
        candidates = specs_mod.select(modules, sm90=True, disable_sm90=disable_sm90)
        try:
            info = describe(python, cenv, candidates, fa3_source=disable_sm90)
        except Unsupported as e:
            return _unsupported(python, str(e.args[0]), e.args[1], t0)
    sm90 = is_sm90(arch_list, info.get("gpu"))
    chosen = specs_mod.select(modules, sm90=sm90, disable_sm90=disable_sm90)
    res = WarmupResult(python=python, target={k: v for k, v in info.items() if k != "specs"})
    if modules is None and not sm90 and not disable_sm90:
        res.notes.append("FA3 (sm90) modules skipped: the target arch is not Hopper")
    queued = [ModuleResult(key=m.key, name=m.expected_name()) for m in chosen]
    for n in res.notes:
        progress.note(n)
    progress.queued(queued)
    index = {m.key: i for i, m in enumerate(chosen)}
    by_key = {m.key: m for m in chosen}

    def prepare(r: ModuleResult, ev: Dict[str, Any]) -> None:
        r.max_jobs, r.jobs_reason = jobs_mod.choose_jobs(by_key[r.key].mem_class, jobs)
        progress.note(f"{r.key}: {r.jobs_reason}")
        for line in jobs_mod.handle_orphans(ev, orphans):
            progress.note(f"{r.key}: {line}")
            res.notes.append(f"{r.key}: {line}")

    hooks = Hooks(
        prepare=prepare,
        start=lambda r: progress.start(r, index[r.key], len(chosen)),
        tick=progress.tick,
        end=lambda r: progress.end(r, index[r.key], len(chosen)),
        quarantine=lambda mr, why: _quarantine(mr, why, res, cenv))
    def timeout_of(key: str) -> float:
        return timeout or (by_key[key].default_timeout if key in by_key else DESCRIBE_TIMEOUT)

    pending = [_req(m) for m in chosen]
    restore = install_sigterm()
    first = True
    try:
        if not sequential and pending:
            pending = _parallel(python, chosen, cenv, timeout_of, stall_after, load, hooks,
                                jobs, rebuild, res, progress, orphans)
        while pending:
            done, pending, child_info = build_session(
                python, pending, dict(cenv), timeout_of, stall_after, load, hooks, first=first)
            first = False
            res.modules += done
            if not res.target:
                res.target = {k: v for k, v in child_info.items() if k not in ("event", "t")}
    except StartFailed as e:
        if str(e).startswith(UNSUPPORTED + ":"):
            return _unsupported(python, str(e), None, t0)
        raise start_error(python, str(e), cenv) from None
    except Interrupted as e:
        res.interrupted = True
        res.modules += e.args[0] if e.args and isinstance(e.args[0], list) else []
        got = {m.key for m in res.modules}
        res.modules += [ModuleResult(key=m.key, status="skipped") for m in chosen
                        if m.key not in got]
    finally:
        restore()
        res.seconds = time.monotonic() - t0
    order = {k: i for i, k in enumerate(index)}
    res.modules.sort(key=lambda m: order.get(m.key, len(order)))
    name_causes(res, python, cenv)
    return res


def _unsupported(python: str, err: str, version: Optional[str], t0: float) -> WarmupResult:
    if version is None:
        m = re.search(r"FlashInfer (\S+)", err)
        version = m.group(1) if m else None
    res = WarmupResult(python=python, target={"version": version})
    res.unsupported = unsupported_finding(python, err, version)
    res.seconds = time.monotonic() - t0
    return res


def name_causes(res: WarmupResult, python: str, env: Dict[str, str]) -> None:
    """A failed build's cause (full disk, read-only cache, OOM kill…) named on its verdict.

    Only when a build failed: diagnose the target once (its cause probes) and
    link them to the ``warmup-build-failed`` verdicts (fidoctor.causes), so the
    verdict says "caused by …" instead of only the compiler's last line.
    """
    failed = [f for f in res.findings if f.id == "warmup-build-failed"]
    if not failed:
        return
    try:
        from fidoctor.causes import link
        from fidoctor.diagnosis import diagnose
        from fidoctor.probes import cause_ids
        from fidoctor.snapshot.context import GatherContext
        from fidoctor.snapshot.runner import gather_snapshot

        ctx = GatherContext(env=dict(env), python=python, python_source="warmup target")
        causes = [f for f in diagnose(gather_snapshot(ctx)).findings if f.id in cause_ids()]
        link(failed + causes, cause_ids())
        for c in causes:
            if c.is_problem and any(f.caused_by == c.id for f in failed):
                res.notes.append(f"cause: {c.id}: {c.title}")
    except Exception as e:  # noqa: BLE001 - naming a cause must never sink the warmup result
        res.notes.append(f"could not look for the cause of the failed build(s): {e}")


def _parallel(python: str, chosen: List[specs_mod.ModuleSpec], cenv: Dict[str, str],
              timeout_of, stall_after: float, load: bool, hooks: Hooks, jobs: Optional[int],
              rebuild: bool, res: WarmupResult, progress: Progress,
              orphans: str) -> List[Dict[str, Any]]:
    """Build module-parallel; the modules left for the sequential path ([] when all done)."""
    from fidoctor.warmup.scheduler import NotParallel, build_parallel

    classes = {m.key: m.mem_class for m in chosen}
    total, why, avail = jobs_mod.budget(list(classes.values()), jobs)
    progress.note(f"module-parallel: {total} jobs in all; {why}")

    def prepare(r: ModuleResult, ev: Dict[str, Any]) -> None:
        for line in jobs_mod.handle_orphans(ev, orphans):
            progress.note(f"{r.key}: {line}")
            res.notes.append(f"{r.key}: {line}")

    phooks = Hooks(prepare=prepare, start=hooks.start, tick=hooks.tick, end=hooks.end,
                   quarantine=hooks.quarantine)
    try:
        done, info = build_parallel(python, [_req(m) for m in chosen], classes, dict(cenv),
                                    timeout_of, stall_after, load, phooks, total, why, avail,
                                    rebuild=rebuild, inflight=progress.inflight)
    except NotParallel as e:
        res.notes.append(f"built one module at a time: {e}")
        progress.note(f"built one module at a time: {e}")
        return [_req(m) for m in chosen]
    res.modules += done
    for m in done:
        if m.info.get("note"):
            res.notes.append(f"{m.key}: {m.info['note']}")
    if not res.target:
        res.target = info
    return []


def _quarantine(mr: ModuleResult, why: str, res: WarmupResult,
                env: Dict[str, str]) -> Optional[str]:
    if why == "foreign":
        res.notes.append(f"{mr.key}: {mr.module_dir} left in place: another live process holds "
                         "its lock, the dir is its work")
        return None
    if not os.path.isdir(mr.module_dir):
        return None
    out = move_aside(mr.module_dir, f"warmup {why}", env)
    if out.get("moved_to"):
        mr.info["quarantine_txid"] = out["txid"]
        what = "the previous module" if why == "rebuild" else "half-built"
        res.notes.append(f"{mr.key}: {what} {mr.module_dir} moved aside to "
                         f"{out['moved_to']} (undo: fidoctor undo --id {out['txid']})")
        return out["moved_to"]
    res.notes.append(f"{mr.key}: could not move {mr.module_dir} aside: {out.get('error')}")
    return None
