"""The live loop: tick the observer, say what changed, diagnose a stall, act on it.

``run_command`` starts the server (the tap carries its output, signals are forwarded,
its exit code is ours); ``watch_pid`` attaches to a running one; ``probe_once`` is one
look for ``watch --once``. All three share ``Session``, which owns the wording, the
deadline warnings, the stall → diagnosis path (the same gather + probes + renderer as
``diagnose --pid``) and ``--on-stall report|exit``.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from fidoctor import selfprocs
from fidoctor.errors import FidoctorError
from fidoctor.flashinfer import eta
from fidoctor.live import deadlines as dl
from fidoctor.live.events import Emitter, duration, gib
from fidoctor.live.observe import Build, Change, LockWait, Observer
from fidoctor.live.stream import Hit, LineWatch
from fidoctor.live.thrash import ThrashWatch
from fidoctor.procfs import is_running, parse_argv, read_proc, read_stat, start_epoch
from fidoctor.proctree import describe_live as describe_proc

EXIT_STALLED = 124          # --on-stall exit, like timeout(1)
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
DIAGNOSE_GAP_S = 30.0       # at most one diagnosis per cause, and not two within this gap
PREFETCH_S = 10.0           # start a stall's snapshot this long before the stall is due
PREFETCH_WAIT_S = 50.0      # the gather's own global budget is 45 s


class Prefetch:
    """``fidoctor snapshot --pid N --no-redact`` in a child of its own session: the same
    gather as ``diagnose --pid`` (loaded here and diagnosed by the same probes)."""

    def __init__(self, proc: subprocess.Popen, path: str, since: float) -> None:
        self.proc, self.path, self.since = proc, path, since

    @classmethod
    def start(cls, pid: int, since: float) -> Prefetch:
        import sys
        import tempfile

        fd, path = tempfile.mkstemp(prefix="fidoctor-watch-", suffix=".json")
        os.close(fd)
        proc = subprocess.Popen([sys.executable, "-m", "fidoctor", "snapshot", "--pid", str(pid),
                                 "--no-redact", "-o", path], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        return cls(proc, path, since)

    def result(self) -> Any:
        from fidoctor.snapshot import Snapshot

        try:
            self.proc.wait(timeout=PREFETCH_WAIT_S)
            return Snapshot.load(self.path) if self.proc.returncode == 0 else None
        except (subprocess.TimeoutExpired, FidoctorError):
            return None
        finally:
            self.cancel()

    def cancel(self) -> None:
        if self.proc.poll() is None:
            from fidoctor.kill import terminate_tree

            terminate_tree(self.proc.pid, sid=self.proc.pid, grace=1.0)
            self.proc.wait()
        try:
            os.unlink(self.path)
        except OSError:
            pass


@dataclass
class Options:
    stall_after: float = 30.0
    lock_idle_after: float = 8.0
    on_stall: str = "none"               # none | report | exit
    report_path: Optional[str] = None
    user_deadlines: Sequence[Tuple[float, str]] = ()
    progress_every: float = 15.0
    tick: float = 1.0
    diagnose: bool = True                # print the diagnosis on a stall / a fatal line


@dataclass
class Session:
    root: int
    argv: List[str]
    env: Dict[str, str]
    emitter: Emitter
    opts: Options
    server_start: float
    python: Optional[str] = None
    observer: Observer = field(init=False)
    thrash: ThrashWatch = field(init=False)
    clocks: List[dl.Deadline] = field(init=False)
    stalls: int = 0
    failures: int = 0
    kill_requested: bool = False
    _said_at: Dict[str, float] = field(default_factory=dict)
    _diagnosed: Dict[str, float] = field(default_factory=dict)
    _hits: Dict[str, set] = field(default_factory=dict)
    _pre: Dict[str, Prefetch] = field(default_factory=dict)
    _warned: set = field(default_factory=set)    # builds whose deadline warning was said

    def __post_init__(self) -> None:
        history = None
        try:
            from fidoctor.flashinfer.layout import discover_workspaces, process_cache_root

            root = process_cache_root(self.root, self.env)
            history = eta.History.gather([str(w["path"]) for w in discover_workspaces(root)],
                                         build_log=self.env.get("FLASHINFER_JIT_BUILD_LOG"))
        except OSError:
            history = None
        self.observer = Observer(self.root, self.env, self.opts.stall_after,
                                 self.opts.lock_idle_after, history=history)
        self.clocks = dl.deadlines(self.argv, self.env, self.opts.user_deadlines)
        self.thrash = ThrashWatch(self.root, self.observer.flashinfer_root, self.env)

    # ---- ticks ------------------------------------------------------------------------
    def tick(self, now: Optional[float] = None) -> None:
        now = now if now is not None else time.time()
        for ch in self.observer.tick(now):
            self.handle(ch, now)
        for f in self.thrash.tick(now, self.observer.builds):
            self.say_thrash(f)
        self.prefetch(now)
        for b in self.observer.builds.values():
            last = self._said_at.get(b.module_dir, 0.0)
            first = last == b.started   # the start line: give the first progress line soon
            if (first and now - b.started >= 2.0) or now - last >= self.opts.progress_every:
                self._said_at[b.module_dir] = now
                self.emitter.emit("progress", self.progress_text(b, now), **b.to_dict(),
                                  **self.eta_fields(b, now))
            self.recheck_deadlines(b, now)
        lk = self.observer.lock
        if lk is not None and lk.announced and lk.build is not None and \
                now - self._said_at.get(lk.lock_path, now) >= self.opts.progress_every:
            self._said_at[lk.lock_path] = now
            self.emitter.emit("progress", f"waiting for the JIT lock of {_short(lk.module)}: "
                              f"the holder's build (pid {lk.build.root}): "
                              f"{self.progress_bits(lk.build, now)}",
                              holder_pid=lk.holder, **lk.build.to_dict())

    def handle(self, ch: Change, now: float) -> None:
        b, lk = ch.build, ch.lock
        if ch.kind == "build-start" and b is not None:
            est = b.estimate
            what = ", ".join(x for x in (b.backend, b.arch) if x)
            eta_text = f"ETA ≈ {duration(est.seconds)} ({est.basis})" if est else "ETA unknown"
            self.emitter.emit("build-start", f"JIT build started: {b.label} [{what}], "
                              f"{b.edges} objects, pid {b.root}; {eta_text}",
                              eta_s=est.seconds if est else None,
                              eta_source=est.source if est else None, **b.to_dict())
            self._said_at[b.module_dir] = b.started
            self.check_deadlines(b, now)
        elif ch.kind == "build-end" and b is not None:
            took = duration(now - b.started)
            if ch.ok:
                self.emitter.emit("build-end", f"JIT build finished: {b.label} in {took}",
                                  ok=True, seconds=round(now - b.started, 1), **b.to_dict())
            else:
                self.failures += 1
                self.emitter.emit("build-end", f"JIT build ended without a module: {b.label} "
                                  f"after {took} ({b.done}/{b.edges} objects, no .so written)",
                                  ok=False, seconds=round(now - b.started, 1), **b.to_dict())
                self.explain(f"build-failed:{b.name}", b.owner)
            self._said_at.pop(b.module_dir, None)
            self.thrash.forget(b.module_dir)
        elif ch.kind == "lock-wait" and lk is not None:
            self.emitter.emit("lock-wait", f"waiting for the JIT lock of "
                              f"{_short(lk.module)}: held by {describe_proc(lk.holder)}"
                              f"{self.holder_text(lk, now)}", **lk.to_dict())
            self._said_at[lk.lock_path] = now
        elif ch.kind == "orphans" and lk is not None:
            self.say_orphans(lk, ch.found)
        elif ch.kind == "lock-end" and lk is not None:
            gone = "" if is_running(lk.holder) else f"; its holder pid {lk.holder} is gone"
            self.emitter.emit("lock-end", f"the JIT lock of {_short(lk.module)} is free "
                              f"(waited {duration(now - lk.since)}{gone})", **lk.to_dict())
        elif ch.kind == "stall":
            self.stalls += 1
            subject = b.label if b else f"waiting for the lock of {_short(lk.module)}" \
                if lk else "?"
            data = b.to_dict() if b else lk.to_dict() if lk else {}
            self.emitter.emit("stall", f"STALLED: {subject}: {ch.reason}; "
                              "diagnosis follows", reason=ch.reason, **data)
            owner = b.owner if b else self.root
            snap = self.explain(f"stall:{b.module_dir if b else lk.lock_path if lk else ''}",
                                owner, force=True)
            self.act_on_stall(snap)
        elif ch.kind == "resumed":
            subject = b.label if b else "the lock holder"
            self.emitter.emit("resumed", f"{subject}: progressing again ({ch.reason})")

    def holder_text(self, lk: LockWait, now: float) -> str:
        b = lk.build
        if b is None:
            return "; its build of the module has not started (no ninja in its tree)"
        return f"; its build (pid {b.root}): {self.progress_bits(b, now)}"

    def say_orphans(self, lk: LockWait, found: List[Any]) -> None:
        """The freed module's orphaned compilers (diagnose's build-process-stuck findings)."""
        from fidoctor.live.orphans import pids_of

        mine = [b for b in self.observer.builds.values()
                if os.path.normpath(b.module_dir) == os.path.normpath(lk.module_dir)]
        beside = (f"they compete with this server's own build of it (pid {mine[0].root}) "
                  "for CPU and memory and write the same objects") if mine else \
            "a build of it now would compete with them and write the same objects"
        holder = "is gone" if not is_running(lk.holder) else "is alive"
        for f in found:
            pids = pids_of(f)
            shown = " ".join(map(str, pids[:12])) + (f" … ({len(pids)} in all)"
                                                      if len(pids) > 12 else "")
            self.emitter.emit(
                "orphans", f"orphaned compilers of {_short(lk.module)} still running (pids "
                f"{shown}): the lock holder pid {lk.holder} {holder}; {beside} "
                f"(diagnose: {f.id} {f.severity})",
                module=lk.module, module_dir=lk.module_dir, lock_path=lk.lock_path,
                holder_pid=lk.holder, pids=pids, finding_id=f.id, severity=f.severity,
                own_build_pid=mine[0].root if mine else None)

    def say_thrash(self, f: Any) -> None:
        """A build thrashing at the memory limit (diagnose's build-memory-thrash finding)."""
        from fidoctor.proctree import fmt_rss

        d = f.data
        want = os.path.normpath(d.get("module_dir") or "")
        b = next((b for b in self.observer.builds.values()
                  if os.path.normpath(b.module_dir) == want), None)
        psi = d.get("psi") or {}
        pressure = f", PSI full avg10 {psi['full_avg10']:.1f} %" if "full_avg10" in psi else ""
        fix = f.fixes[0].description if f.fixes else ""
        ev: Dict[str, Any] = dict(b.to_dict() if b else {})
        ev.update(module=d.get("module"), module_dir=d.get("module_dir"), finding_id=f.id,
                  severity=f.severity, pids=d.get("pids") or [], usage=d.get("usage"),
                  limit=d.get("limit"), anon=d.get("anon"),
                  limit_hits_per_s=d.get("limit_hits_per_s"), majflt_per_s=d.get("majflt_per_s"),
                  psi=d.get("psi"), cgroup_dir=d.get("thrash_dir"),
                  cgroup_version=d.get("cgroup_version"), findings=[f.to_dict()])
        self.emitter.emit(
            "memory-thrash",
            f"MEMORY THRASH: {b.label if b else _short(d.get('module') or '?')} at its "
            f"{fmt_rss(d.get('limit'))} memory limit (usage {fmt_rss(d.get('usage'))}): "
            f"{d.get('limit_hits_per_s') or 0:,.0f} limit hits/s, "
            f"{d.get('majflt_per_s') or 0:,.0f} major faults/s{pressure}, no OOM kill: the "
            "kernel reclaims and refaults the compilers' code, so this build makes next to no "
            f"progress and can sit like this for minutes ({f.id} {f.severity}"
            + (f"; fix: {fix}" if fix else "") + ")", **ev)
        if self.opts.diagnose:
            from fidoctor.render.style import Styler
            from fidoctor.render.text import finding_lines

            self.emitter.say("\n".join(finding_lines(f, Styler(False))))

    def progress_text(self, b: Build, now: float) -> str:
        return f"building {b.label}: {self.progress_bits(b, now)}"

    def progress_bits(self, b: Build, now: float) -> str:
        return (f"{b.done}/{b.edges} objects, {b.compilers} compiling, "
                f"CPU {b.cpu_fraction * 100:.0f}%, RSS {gib(b.rss)}, "
                f"{duration(now - b.started)} elapsed, {self.eta_text(b, now)}")

    def eta_text(self, b: Build, now: float) -> str:
        """The time left: from ninja's own progress once an object is done (``≈`` with its
        range and basis), else the start estimate; never a made-up end."""
        re = b.reestimate()
        if re is not None and re.high is not None:
            return (f"ETA ≈ {duration(re.left)} ({duration(re.low)}–{duration(re.high)}; "
                    f"{re.source})")
        left = eta.remaining(b.estimate, now - b.started, b.done, b.edges)
        if left is None:
            text = "ETA unknown" if b.estimate is None else \
                f"longer than expected (estimated {duration(b.estimate.seconds)})"
        else:
            text = f"ETA {duration(left)}"
        if re is not None and re.low >= 1 and (left is None or re.low > left):
            text = f"ETA ≥ {duration(re.low)} ({_outran(re.outrun)}; {re.source})"
        elif re is not None and left is None and b.estimate is not None:
            text = (f"longer than expected (estimated {duration(b.estimate.seconds)} at its "
                    f"start; {_outran(re.outrun)}; {re.source})")
        return text

    def eta_fields(self, b: Build, now: float) -> Dict[str, Any]:
        """The ETA of a progress event: seconds left (the floor when no end can be told), its
        range and what it rests on (``ninja-progress`` or the start estimate's basis)."""
        re = b.reestimate()
        if re is not None and re.high is not None:
            return {"eta_left_s": round(re.left, 1), "eta_low_s": round(re.low, 1),
                    "eta_high_s": round(re.high, 1), "eta_basis": "ninja-progress"}
        elapsed = now - b.started
        left = eta.remaining(b.estimate, elapsed, b.done, b.edges)
        if re is not None and (left is None or re.low > left):   # a floor, no end
            return {"eta_left_s": None, "eta_low_s": round(re.low, 1), "eta_high_s": None,
                    "eta_basis": "ninja-progress"}
        est = b.estimate
        if est is None or left is None:
            return {"eta_left_s": None, "eta_low_s": None, "eta_high_s": None,
                    "eta_basis": est.basis if est else None}
        return {"eta_left_s": round(left, 1), "eta_low_s": round(max(est.low - elapsed, 0), 1),
                "eta_high_s": round(max(est.high - elapsed, 0), 1), "eta_basis": est.basis}

    def recheck_deadlines(self, b: Build, now: float) -> None:
        """A deadline the start estimate did not see coming, seen by the re-estimate: warn once
        (the seed table is GPU-host figures; on a small box a build can take 4× them)."""
        re = b.reestimate()
        if re is None or not self.clocks or b.module_dir in self._warned:
            return
        total = now - b.started + re.left
        hit = dl.first_overrun(self.clocks, b.started, self.server_start, total)
        if hit is None:
            return
        self._warned.add(b.module_dir)
        d, left = hit
        when = (f"ends {duration(left)} after this build began" if d.clock == "start" else
                f"cuts off a forward step after {duration(d.seconds)}")
        need = "≈" if re.high is not None else "≥"
        self.emitter.emit(
            "deadline",
            f"warning: {b.label} needs {need} {duration(total)} by its progress so far "
            f"({re.source}), but {d.what} ({d.setting}, {duration(d.seconds)}) {when}: this "
            f"start will likely be killed mid-build. Extend it ({d.extend}) or take the build "
            "off the critical path: `fidoctor warmup` before the server starts.",
            module=b.name, eta_s=round(total, 1), left_s=round(left, 1), eta_basis="ninja-progress",
            **d.to_dict())

    def check_deadlines(self, b: Build, now: float) -> None:
        if b.estimate is None or not self.clocks:
            return
        hit = dl.first_overrun(self.clocks, b.started, self.server_start, b.estimate.seconds)
        if hit is None:
            return
        self._warned.add(b.module_dir)
        d, left = hit
        when = (f"ends {duration(left)} after this build began" if d.clock == "start" else
                f"cuts off a forward step after {duration(d.seconds)}")
        self.emitter.emit(
            "deadline",
            f"warning: {b.label} needs ≈ {duration(b.estimate.seconds)}, but {d.what} "
            f"({d.setting}, {duration(d.seconds)}) {when}: this start will likely be killed "
            f"mid-build. Extend it ({d.extend}) or take the build off the critical path: "
            "`fidoctor warmup` before the server starts.",
            module=b.name, eta_s=b.estimate.seconds, left_s=round(left, 1), **d.to_dict())

    # ---- the server's output ------------------------------------------------------------
    def on_hits(self, hits: List[Hit]) -> None:
        for h in hits:
            self.failures += 1
            seen = self._hits.setdefault(h.kind, set())
            if h.line in seen or len(seen) >= 3:
                continue          # one line per distinct text, three per kind (ranks repeat)
            seen.add(h.line)
            self.emitter.emit("server-error", f"the server printed an error ({h.kind}): "
                              f"{h.line[:300]}", stream=h.stream, kind=h.kind,
                              finding_id=h.finding_id, line=h.line[:2000])
            self.explain(f"server:{h.kind}", self.root)

    # ---- diagnosis --------------------------------------------------------------------
    def explain(self, key: str, pid: int, force: bool = False) -> Any:
        """The same findings as ``diagnose --pid`` (once per cause); returns the snapshot.

        A stall's snapshot was usually started ``PREFETCH_S`` before the stall was due (see
        ``prefetch``): the gather (≈1 s, up to ~9 s with a hung nvcc answering the toolchain
        queries) then overlaps the last quiet seconds instead of following them."""
        now = time.time()
        if not self.opts.diagnose and not force:
            return None
        if key in self._diagnosed or (not force and self._diagnosed and
                                      now - max(self._diagnosed.values()) < DIAGNOSE_GAP_S):
            return None
        self._diagnosed[key] = now
        from fidoctor.diagnosis import diagnose
        from fidoctor.render.style import Styler
        from fidoctor.render.text import render
        from fidoctor.snapshot.runner import gather_snapshot

        target = pid if os.path.exists(f"/proc/{pid}") else self.root
        snap = self._prefetched(key)
        if snap is None:
            snap = gather_snapshot(self._context(target))
        diag = diagnose(snap)
        if self.opts.diagnose or force:
            self.emitter.say(render(diag, Styler(False)))
        self.emitter.emit("diagnosis", "", findings=[f.to_dict() for f in diag.findings],
                          exit_code=diag.exit_code, pid=target)
        return snap

    def _context(self, target: int) -> Any:
        """``diagnose --pid target``'s view; else the server's interpreter (``watch`` of a
        shell wrapper: its exe is no Python, never run with fidoctor's script), else its
        environment's venv, else fidoctor's own interpreter with its environment."""
        import sys

        from fidoctor.snapshot.context import build_context

        tries: List[Dict[str, Any]] = [{"pid": target}]
        if self.python:
            tries.append({"python": self.python, "env": self.env})
        tries += [{"env": self.env}, {"python": sys.executable, "env": self.env}]
        for kw in tries[:-1]:
            try:
                return build_context(**kw)
            except FidoctorError:
                continue
        return build_context(**tries[-1])

    def prefetch(self, now: float) -> None:
        """Start gathering a snapshot of a build (or lock wait) that has been quiet for all but
        the last ``PREFETCH_S`` of its stall limit; drop it when the subject moves again."""
        subjects = {f"stall:{b.module_dir}": (b.owner, b.last_progress, self.opts.stall_after)
                    for b in self.observer.builds.values() if not b.stalled}
        lk = self.observer.lock
        if lk is not None and not lk.stalled:
            subjects[f"stall:{lk.lock_path}"] = (self.root, lk.last_progress,
                                                 self.opts.lock_idle_after)
        for key, (pid, last, limit) in subjects.items():
            due = last + max(limit - PREFETCH_S, limit / 2)
            pre = self._pre.get(key)
            if pre is not None and pre.since < last:          # it moved: that one is stale
                pre.cancel()
                del self._pre[key]
                pre = None
            if pre is None and now >= due and key not in self._diagnosed:
                self._pre[key] = Prefetch.start(pid, since=now)
        for key in [k for k in self._pre if k not in subjects and k not in self._diagnosed]:
            self._pre.pop(key).cancel()

    def _prefetched(self, key: str) -> Any:
        pre = self._pre.pop(key, None)
        return pre.result() if pre is not None else None

    def helper_pids(self) -> List[int]:
        return [p.proc.pid for p in self._pre.values()]

    def close(self) -> None:
        for pre in self._pre.values():
            pre.cancel()
        self._pre.clear()

    def act_on_stall(self, snap: Any) -> None:
        if self.opts.on_stall == "report" and snap is not None:
            path = self.opts.report_path or \
                f"fidoctor-stall-{self.root}-{time.strftime('%Y%m%d-%H%M%S')}.md"
            try:
                from fidoctor.report import build

                _write(path, build(snap, redact=True).markdown)
                self.emitter.emit("report", f"wrote the redacted report: {path}", path=path)
            except (OSError, FidoctorError) as e:
                why = e.message if isinstance(e, FidoctorError) else (e.strerror or str(e))
                self.emitter.emit("report", f"could not write {path}: {why}", path=path,
                                  error=str(e))
        elif self.opts.on_stall == "exit":
            self.kill_requested = True


def _outran(n: int) -> str:
    return (f"{n} still compiling {'has' if n == 1 else 'have'} run longer than any finished "
            "object")


def _short(name: str) -> str:
    from fidoctor.flashinfer.modnames import short_name

    return short_name(name)


def _write(path: str, text: str) -> None:
    """The --report file, mode 0600 like every report; never replaces a FIFO, device or
    symlink (a temp file + os.replace did: --report /dev/stderr swapped the link for a file)."""
    from fidoctor.safeio import write_atomic

    write_atomic(path, text.encode(), what="--report")


# ---- fidoctor run -- CMD ------------------------------------------------------------------

def _terminal_foreground() -> bool:
    try:
        return os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp()
    except OSError:
        return False


def _give_terminal(pgid: int) -> None:
    old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        os.tcsetpgrp(0, pgid)
    except OSError:
        pass
    finally:
        signal.signal(signal.SIGTTOU, old)


def _child_takes_terminal() -> None:  # runs in the child, before exec
    os.setpgid(0, 0)
    _give_terminal(os.getpgrp())


def _pidfd(pid: int) -> Optional[int]:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def reap_orphans(keep: Sequence[int]) -> None:
    """As PID 1 (a container entrypoint) orphans are re-parented to us: reap their zombies,
    never the server's or the tap's status (``WNOWAIT`` peeks before we take one)."""
    if os.getpid() != 1:
        return
    for _ in range(64):
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if info is None or info.si_pid in keep:
            return
        try:
            os.waitpid(info.si_pid, os.WNOHANG)
        except ChildProcessError:
            return


def run_command(cmd: Sequence[str], opts: Options, emitter: Emitter, tap_mode: str = "auto"
                ) -> int:
    """Start ``cmd`` under watch; return its exit code (128+N for signal N, 124 on --on-stall
    exit)."""
    from fidoctor.live.tap import Tap

    streams = {n: fd for n, fd in (("stdout", 1), ("stderr", 2))
               if tap_mode == "always" or (tap_mode == "auto" and not os.isatty(fd))}
    tap = Tap(streams)
    foreground = _terminal_foreground()
    kw: Dict[str, Any] = {"stdout": tap.server_fds.get("stdout"),
                          "stderr": tap.server_fds.get("stderr")}
    if foreground:
        kw["preexec_fn"] = _child_takes_terminal   # its own group, and the terminal's keys
    else:
        kw["start_new_session"] = True             # its own session: survives our death
    try:
        child = subprocess.Popen(list(cmd), **kw)
    except OSError as e:
        raise FidoctorError(f"cannot start {cmd[0]}: {e.strerror or e}",
                            "check the command after --") from None
    finally:
        tap.started()
    selfprocs.foreign(child.pid)  # the user's server: never one of fidoctor's own
    started = time.time()
    sess = Session(child.pid, list(cmd), dict(os.environ), emitter, opts, started,
                   python=None)
    lines = LineWatch()
    sent: List[int] = []

    def forward(signum: int, _frame: Any) -> None:
        sent.append(signum)
        try:
            os.kill(child.pid, signum)
        except OSError:
            pass

    old = {s: signal.signal(s, forward) for s in FORWARDED}
    emitter.emit("start", "", pid=child.pid, argv=list(cmd),
                 deadlines=[d.to_dict() for d in sess.clocks], tapped=sorted(streams))
    pidfd = _pidfd(child.pid)
    code: Optional[int] = None
    try:
        next_tick = time.monotonic()
        while True:
            fds = [fd for fd in (tap.copy_fd, pidfd) if fd is not None]
            wait = max(0.0, next_tick - time.monotonic())
            try:
                ready, _, _ = select.select(fds, [], [], wait) if fds else ([], [], [])
                if not fds:
                    time.sleep(wait)
            except InterruptedError:
                ready = []
            if tap.copy_fd is not None and (tap.copy_fd in ready or pidfd in ready):
                for name, data in tap.read():
                    sess.on_hits(lines.feed(name, data))
            code = child.poll()
            if code is not None:
                break
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + opts.tick
                reap_orphans([child.pid] + ([tap.proc.pid] if tap.proc else [])
                             + sess.helper_pids())
                sess.tick()
                if sess.kill_requested:
                    break
        if sess.kill_requested:
            from fidoctor.kill import terminate_tree

            sid = child.pid if not foreground else None
            left = terminate_tree(child.pid, sid=sid, grace=5.0)
            child.wait()
            emitter.emit("exit", f"stopped the server and its whole tree (--on-stall exit); "
                         f"{'nothing left running' if not left else f'still alive: {left}'}",
                         code=EXIT_STALLED, reason="stalled", survivors=left)
            return EXIT_STALLED
    finally:
        sess.close()
        for s, h in old.items():
            signal.signal(s, h)
        if pidfd is not None:
            os.close(pidfd)
        if foreground:
            _give_terminal(os.getpgrp())
    tap.wait(timeout=5.0)
    for name, data in tap.read():
        sess.on_hits(lines.feed(name, data))
    sess.on_hits(lines.flush())
    sess.tick()   # a build that ended with the server
    sess.close()
    rc = code if code is not None and code >= 0 else 128 + (-(code or 0))
    from fidoctor.live.leftover import left_running

    mine = {os.getpid(), child.pid} | ({tap.proc.pid} if tap.proc else set())
    left = left_running(child.pid, tap.pipe_inodes if tap.alive() else [], mine)
    text = ""
    if left:
        shown = ", ".join(f"{p} ({_cmd(p)})" for p in left[:5]) + \
            (f" … ({len(left)} in all)" if len(left) > 5 else "")
        text = (f"the server command (pid {child.pid}) exited with {rc} but left "
                f"{len(left)} process(es) running: {shown}; fidoctor does not follow them: "
                f"fidoctor watch --pid {left[0]}")
    emitter.emit("exit", text, code=rc, reason="server exited", signals_forwarded=sent,
                 left_running=left)
    return rc


def _cmd(pid: int) -> str:
    from fidoctor.textsafe import shown

    argv = parse_argv(read_proc(pid, "cmdline", 4096) or b"")
    return shown(" ".join(argv)[:80]) if argv else "?"


# ---- fidoctor watch --pid N ----------------------------------------------------------------

def read_target(pid: int) -> Tuple[List[str], Dict[str, str], float, Optional[str]]:
    """argv, environment, start time (epoch) and interpreter of a running process."""
    from fidoctor.snapshot.context import read_proc_environ
    from fidoctor.snapshot.interpreter import same_mount_ns

    env = read_proc_environ(pid)
    if same_mount_ns(pid) is False:  # as diagnose --pid: its paths are not ours to watch
        raise FidoctorError(
            f"pid {pid} runs in another mount namespace (a container): its cache and build "
            "dirs are not the ones fidoctor sees, so 'not compiling' here would mean nothing",
            "run fidoctor watch inside that container (kubectl exec / docker exec)")
    argv = parse_argv(read_proc(pid, "cmdline") or b"")
    st = read_stat(pid)
    start = start_epoch(st["starttime"]) if st else time.time()
    try:
        exe: Optional[str] = os.readlink(f"/proc/{pid}/exe").replace(" (deleted)", "")
    except OSError:
        exe = None
    return argv, env, start, exe


def watch_pid(pid: int, opts: Options, emitter: Emitter) -> int:
    """Follow a running server until it exits: 0 nothing went wrong, 1 a stall or failure."""
    argv, env, start, exe = read_target(pid)
    sess = Session(pid, argv, env, emitter, opts, start, python=exe)
    emitter.emit("start", "", pid=pid, argv=argv, deadlines=[d.to_dict() for d in sess.clocks])
    pidfd = _pidfd(pid)
    first = read_stat(pid)
    born = first["starttime"] if first else None
    from fidoctor.kill import create_time_of

    created = create_time_of(pid)   # --on-stall exit signals this very process, never a reuse

    def ended() -> bool:
        """The server exited: its pidfd is readable (it ends for an unreaped zombie too, and
        never follows a recycled pid), else its stat is gone, a zombie, or another process's
        (another start time: the pid was reused)."""
        if pidfd is not None and select.select([pidfd], [], [], 0)[0]:
            return True
        st = read_stat(pid)
        return st is None or st["state"] in ("Z", "X") or st["starttime"] != born

    try:
        while not ended():
            sess.tick()
            if sess.kill_requested:
                break
            if pidfd is not None:
                select.select([pidfd], [], [], opts.tick)
            else:
                time.sleep(opts.tick)
    finally:
        sess.close()
        if pidfd is not None:
            os.close(pidfd)
    if sess.kill_requested:   # --on-stall exit: the watched server's tree, as run does
        if created is None:   # never signal a pid we cannot identify
            emitter.emit("exit", f"pid {pid} was not stopped (--on-stall exit): its start "
                         "time could not be read, so it could not be told from a reused pid",
                         code=1, reason="stalled")
            return 1
        from fidoctor.kill import terminate_tree

        left = terminate_tree(pid, grace=5.0, expect={pid: created})
        emitter.emit("exit", f"stopped pid {pid} and its whole tree (--on-stall exit); "
                     f"{'nothing left running' if not left else f'still alive: {left}'}",
                     code=EXIT_STALLED, reason="stalled", survivors=left)
        return EXIT_STALLED
    sess.tick()
    sess.close()
    rc = 1 if sess.stalls or sess.failures else 0
    emitter.emit("exit", f"pid {pid} exited", code=rc, reason="target exited")
    return rc


def probe_once(pid: int, opts: Options, emitter: Emitter, state_path: str,
               window: float = 0.5) -> int:
    """One look (two samples ``window`` apart, plus what the last run remembered).

    0 not compiling or progressing · 1 stalled or failed · 2 could not tell.
    """
    if not os.path.exists(f"/proc/{pid}"):
        emitter.emit("status", f"status: could not tell: no process {pid}", code=2,
                     status="unknown")
        return 2
    argv, env, start, exe = read_target(pid)
    opts.diagnose = False
    sess = Session(pid, argv, env, Emitter(quiet=True), opts, start, python=exe)
    obs = sess.observer
    obs.tick()
    state = _load_state(state_path)
    obs.import_state(state)
    time.sleep(window)
    changes = obs.tick()
    _save_state(state_path, obs.export_state())
    now = time.time()
    stalled = [b for b in obs.builds.values() if now - b.last_progress >= opts.stall_after]
    lock = obs.lock
    if any(c.kind == "build-end" and not c.ok for c in changes) or obs.failed and not obs.builds:
        text, code, status = (f"status: FAILED: a JIT build ended without its module "
                              f"({', '.join(_short(n) for n in obs.failed[-3:])})", 1, "failed")
    elif not is_running(pid):
        text, code, status = (f"status: could not tell: pid {pid} exited while it was looked "
                              "at", 2, "unknown")
    elif stalled:
        b = stalled[0]
        text, code, status = (f"status: STALLED: {b.label}: no progress for "
                              f"{duration(now - b.last_progress)} (pid {b.root}); run: "
                              f"fidoctor diagnose --pid {pid}", 1, "stalled")
    elif lock is not None and now - lock.last_progress >= opts.lock_idle_after:
        text, code, status = (f"status: STALLED: waiting for the JIT lock of "
                              f"{_short(lock.module)}, held by idle pid {lock.holder}; run: "
                              f"fidoctor diagnose --pid {pid}", 1, "stalled")
    elif obs.builds:
        b = next(iter(obs.builds.values()))
        text, code, status = ("status: " + sess.progress_text(b, now), 0, "building")
    elif lock is not None:
        text, code, status = (f"status: waiting for the JIT lock of {_short(lock.module)} "
                              f"(holder pid {lock.holder} is working"
                              f"{sess.holder_text(lock, now)})", 0, "lock-wait")
    else:
        text, code, status = ("status: not compiling", 0, "idle")
    emitter.emit("status", text, code=code, status=status, pid=pid,
                 builds=[b.to_dict() for b in obs.builds.values()])
    return code


def _load_state(path: str) -> Mapping[str, Any]:
    from fidoctor.safeio import SMALL_CAP, read_json

    try:  # regular files only, never blocking: a FIFO named as --state hung here
        d = read_json(path, SMALL_CAP, what="--state")
        return d if isinstance(d, dict) else {}
    except (FidoctorError, OSError, ValueError):
        return {}


def _save_state(path: str, state: Mapping[str, Any]) -> None:
    from fidoctor.safeio import write_atomic

    try:  # never replaces a FIFO, device or symlink named as --state
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_atomic(path, json.dumps(state).encode(), mode=0o644, what="--state")
    except (FidoctorError, OSError):
        pass
