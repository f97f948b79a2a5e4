"""Build modules in a supervised child: progress, stall, timeout, clean-up.

The child (child.py, in the target interpreter) leads a session of its own
and builds the whole set with one torch import; before each module it waits
for our go (orphans dealt with, MAX_JOBS chosen).
Every second we sample its compiler tree (watch.py). A stall (no progress for
``stall_after`` s) or the hard ``timeout`` ends the *whole* tree (kill.py:
descendants and session members, since ninja puts each edge in its own
process group), then the half-built module dir is moved aside and recorded
(quarantine.py) — unless another live process holds the module's lock, in
which case the dir is that process's work and stays where it is.
Ctrl-C and SIGTERM take the same clean-up path.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import psutil

from fidoctor.errors import FidoctorError
from fidoctor.kill import terminate_tree
from fidoctor.model import Finding
from fidoctor.proctree import describe_live as describe_proc
from fidoctor.warmup import verdicts
from fidoctor.warmup.result import ModuleResult
from fidoctor.warmup.watch import Sample, TreeWatch, blocked_leaf

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "child.py")
TAG = "@@fidoctor "
INTERVAL = 1.0


class Interrupted(Exception):
    """Ctrl-C or SIGTERM arrived while a module was building."""


def spawn_child(python: str, request: Dict[str, Any], env: Mapping[str, str], stdin: Any,
                stderr: Any) -> subprocess.Popen:
    """The warmup child in its own session; a target that cannot be executed at all (another
    CPU's binary, a noexec mount) is a one-line error, not an internal one."""
    try:
        return subprocess.Popen([python, CHILD, json.dumps(request)], stdout=subprocess.PIPE,
                                stderr=stderr, stdin=stdin, env=dict(env), start_new_session=True)
    except OSError as e:
        raise FidoctorError(f"cannot start the target interpreter {python}: {e.strerror or e}",
                            "pass --python /path/to/serving-venv/bin/python") from None


def run_child(python: str, request: Dict[str, Any], env: Mapping[str, str],
              timeout: float) -> List[Dict[str, Any]]:
    """Run the child to completion (describe mode) and return its events.

    Guarded like a build: its own session, the whole tree ended on timeout.
    """
    with tempfile.TemporaryFile() as err:
        p = spawn_child(python, request, env, subprocess.DEVNULL, err)
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            terminate_tree(p.pid, sid=p.pid, grace=1.0)
            p.wait()
            return [{"event": "fatal", "stage": "describe",
                     "error": f"the target interpreter did not answer within {timeout:.0f} s"}]
        finally:
            if p.poll() is None:
                terminate_tree(p.pid, sid=p.pid, grace=1.0)
        events = _parse(out.decode("utf-8", "replace"))
        if p.returncode not in (0, 1) and not any(e["event"] == "fatal" for e in events):
            err.seek(0)
            tail = err.read()[-2000:].decode("utf-8", "replace").strip().splitlines()
            events.append({"event": "fatal", "stage": "start",
                           "error": (tail[-1] if tail else f"exit {p.returncode}")[:300]})
        return events


def _parse(text: str) -> List[Dict[str, Any]]:
    out = []
    for ln in text.splitlines():
        if ln.startswith(TAG):
            try:
                out.append(json.loads(ln[len(TAG):]))
            except ValueError:
                continue
    return out


@dataclass
class Hooks:
    """What the runner does at each step of a session (all called in our thread)."""

    prepare: Callable[[ModuleResult, Dict[str, Any]], None]   # orphans, MAX_JOBS
    start: Callable[[ModuleResult], None]
    tick: Callable[[ModuleResult, float, Sample], None]
    end: Callable[[ModuleResult], None]
    quarantine: Callable[[ModuleResult, str], Optional[str]]


class StartFailed(Exception):
    """The target could not import FlashInfer or lacks its generators (exit 2)."""


def build_session(python: str, modules: List[Dict[str, Any]], env: Mapping[str, str],
                  timeout_of: Callable[[str], float], stall_after: float, load: bool,
                  hooks: Hooks, first: bool = True) -> Tuple[List[ModuleResult],
                                                             List[Dict[str, Any]],
                                                             Dict[str, Any]]:
    """Build ``modules`` in one supervised child (one torch import for the whole set).

    Returns (finished results, modules not attempted, the child's info). A stall or
    timeout ends the child's whole tree and returns the rest, so the caller starts
    a fresh child for them. Never returns with a process left running.
    """
    req = {"mode": "build", "modules": modules, "load": load, "handshake": True}
    errf = tempfile.TemporaryFile()  # noqa: SIM115 - closed in finally
    try:
        p = spawn_child(python, req, env, subprocess.PIPE, errf)
    except FidoctorError:
        errf.close()
        raise
    events: queue.Queue[Dict[str, Any]] = queue.Queue()
    reader = threading.Thread(target=read_events, args=(p.stdout, events), daemon=True)
    reader.start()
    watch = TreeWatch(p.pid, [], None)
    keys = [m["key"] for m in modules]
    results: List[ModuleResult] = []
    info: Dict[str, Any] = {}
    cur: Optional[ModuleResult] = None
    spec_info: Dict[str, Any] = {}
    phase = last_progress = time.monotonic()
    seen: set = set()
    ended, fatal, interrupted = False, None, False

    def next_key() -> Optional[str]:
        done = {r.key for r in results} | ({cur.key} if cur else set())
        return next((k for k in keys if k not in done), None)

    def finish(r: ModuleResult) -> None:
        nonlocal cur
        r.seconds = time.monotonic() - phase
        if r.status == "failed" and r.verdict is None:
            r.verdict = verdicts.failed(r)
        results.append(r)
        hooks.end(r)
        cur = None

    early: List[Dict[str, Any]] = []
    try:
        while True:
            now = time.monotonic()
            while not events.empty():
                early.append(events.get_nowait())
            for ev in early:
                last_progress = now
                kind, key = ev.get("event"), ev.get("key")
                if kind == "info":
                    info = ev
                elif kind == "fatal":
                    fatal = ev
                elif kind == "spec":
                    cur, spec_info, phase = ModuleResult(key=str(key or "")), ev, now
                    apply_event(cur, ev)
                    cur.info["compiled"] = bool(ev.get("compiled"))
                    hooks.prepare(cur, ev)
                    watch.dirs = [d for d in (ev.get("module_dir"), ev.get("generated_dir")) if d]
                    watch.lock_path = ev.get("lock_path")
                    send_line(p, {"go": True, "max_jobs": cur.max_jobs})
                    hooks.start(cur)
                elif kind == "building" and cur is not None:
                    cur.status = "building"
                elif kind in ("done", "failed") and cur is not None and cur.key == key:
                    apply_event(cur, ev)
                    if cur.status == "done" and cur.info.get("compiled"):
                        cur.status = "cached"
                    finish(cur)
                    phase = now
                elif kind == "failed":  # could not even generate the module
                    r = ModuleResult(key=str(key or ""))
                    apply_event(r, ev)
                    finish(r)
                    phase = now
            early = []
            if p.poll() is not None:
                reader.join(timeout=2.0)
                if events.empty():
                    ended = True
                    break
                continue
            s = watch.sample(now)
            seen.update(pr.pid for pr in watch.last_procs)
            if s.progressed:
                last_progress = now
            subject = cur or ModuleResult(key=next_key() or "?", status="starting")
            subject.peak_rss = max(subject.peak_rss, s.rss)
            subject.cpu_seconds += s.cpu_fraction * INTERVAL
            subject.seconds = now - phase
            if cur is not None:
                hooks.tick(cur, now - phase, s)
            if now - phase >= timeout_of(subject.key):
                subject.status = "timed_out"
                subject.verdict = verdicts.timed_out(subject, timeout_of(subject.key),
                                                     procs_text(watch, p.pid))
                cur = subject
                break
            if now - last_progress >= stall_after:
                subject.status = "stalled"
                subject.verdict = stall_verdict(subject, watch, p.pid, stall_after, spec_info)
                cur = subject
                break
            try:  # wake at once for the child's events (spec → go, done → next module)
                early.append(events.get(timeout=INTERVAL))
            except queue.Empty:
                pass
    except (KeyboardInterrupt, Interrupted):
        interrupted = True
        if cur is not None:
            cur.status, cur.error = "interrupted", "interrupted (Ctrl-C/SIGTERM)"
    finally:
        unshield = shield_cleanup()
        try:
            watch.tree()
            seen.update(pr.pid for pr in watch.last_procs)
            foreign = watch.foreign_holder
            survivors = terminate_tree(p.pid, sid=p.pid, grace=3.0)
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                survivors.append(p.pid)
            pids = sorted(seen - ({foreign} if foreign else set()))
            if cur is not None and not ended:  # stalled, timed out or interrupted mid-module
                cur.survivors, cur.pids_seen = survivors, pids
                if cur.module_dir:
                    cur.quarantined = hooks.quarantine(cur, "foreign" if foreign else cur.status)
                finish(cur)
            elif cur is not None:  # the child died mid-module
                errf.seek(0)
                tail = errf.read()[-3000:].decode("utf-8", "replace").strip().splitlines()
                cur.status = "failed"
                cur.error = cur.error or (tail[-1] if tail else f"child exited {p.returncode}")
                finish(cur)
            for r in results:
                r.pids_seen = r.pids_seen or pids
                r.survivors = r.survivors or survivors
            errf.close()
        finally:
            unshield()
    if interrupted:
        raise Interrupted(results)
    if fatal and first and not results:
        raise StartFailed(fatal.get("error") or "the target could not start")
    done = {r.key for r in results}
    rest = [m for m in modules if m["key"] not in done]
    if ended and rest:  # the child exited without reaching them: report, don't loop
        for m in rest:
            r = ModuleResult(key=m["key"], status="failed",
                             error=(fatal or {}).get("error") or "the build child exited early")
            finish(r)
        rest = []
    return results, rest, info


def send_line(p: subprocess.Popen, msg: Dict[str, Any]) -> None:
    try:
        assert p.stdin is not None
        p.stdin.write((json.dumps(msg) + "\n").encode())
        p.stdin.flush()
    except (OSError, ValueError):
        pass  # the child is gone; the loop notices


def read_events(stream, q: queue.Queue[Dict[str, Any]]) -> None:
    for raw in iter(stream.readline, b""):
        ln = raw.decode("utf-8", "replace")
        if ln.startswith(TAG):
            try:
                q.put(json.loads(ln[len(TAG):]))
            except ValueError:
                pass
    stream.close()


def apply_event(res: ModuleResult, ev: Dict[str, Any]) -> None:
    kind = ev.get("event")
    if kind == "spec":
        res.name = ev.get("name") or res.name
        res.module_dir = ev.get("module_dir") or res.module_dir
    elif kind == "building":
        res.status = "building"
    elif kind == "done":
        res.status = "done"
        res.info["so_size"] = ev.get("so_size")
    elif kind in ("failed", "fatal"):
        res.status = "failed"
        res.error = ev.get("error", "")
        res.info["detail"] = ev.get("detail", "")


def procs_text(watch: TreeWatch, root: int) -> List[str]:
    return [describe_proc(p.pid) for p in watch.tree()][:8]


def stall_verdict(res: ModuleResult, watch: TreeWatch, root: int, stall_after: float,
                   spec_info: Dict[str, Any]) -> Finding:
    procs = watch.tree()
    holder = watch.foreign_holder
    if holder:
        return verdicts.stalled_on_lock(res, stall_after, spec_info.get("lock_path", ""),
                                        describe_proc(holder), procs_text(watch, root))
    leaf = blocked_leaf(procs, root)
    what = describe_proc(leaf) if leaf else ""
    if leaf:
        try:  # the edge's command line names the compiler even when it exec'd a helper
            parent = psutil.Process(leaf).parent()
            if parent is not None and parent.pid != root:
                what += f", child of {describe_proc(parent.pid)}"
        except psutil.Error:
            pass
    return verdicts.stalled_blocked(res, stall_after, what, procs_text(watch, root))


def shield_cleanup() -> Callable[[], None]:
    """Ignore SIGINT while a tree is being ended (a second Ctrl-C, or ``timeout`` passing
    one on, must not leave the compilers orphaned); returns the undo. Main thread only."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)

    def restore() -> None:
        signal.signal(signal.SIGINT, old)

    return restore


def install_sigterm() -> Callable[[], None]:
    """Turn SIGTERM into Interrupted so ``docker stop`` gets the same clean-up as Ctrl-C."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):  # noqa: ARG001
        raise Interrupted("SIGTERM")

    old = signal.signal(signal.SIGTERM, handler)

    def restore() -> None:
        signal.signal(signal.SIGTERM, old)

    return restore


def stderr_is_tty() -> bool:
    return sys.stderr.isatty()
