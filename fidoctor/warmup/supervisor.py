"""Build one module in a supervised child: progress, stall, timeout, clean-up.

The child (child.py, in the target interpreter) leads a session of its own.
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
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional

import psutil

from fidoctor.kill import terminate_tree
from fidoctor.model import Finding
from fidoctor.warmup import verdicts
from fidoctor.warmup.watch import Sample, TreeWatch, blocked_leaf, describe_proc

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "child.py")
TAG = "@@fidoctor "
INTERVAL = 1.0


@dataclass
class ModuleResult:
    key: str
    name: str = ""
    module_dir: str = ""
    status: str = "queued"  # queued|cached|done|failed|stalled|timed_out|interrupted|skipped
    seconds: float = 0.0
    error: str = ""
    max_jobs: int = 0
    jobs_reason: str = ""
    peak_rss: int = 0
    cpu_seconds: float = 0.0
    verdict: Optional[Finding] = None
    quarantined: Optional[str] = None
    survivors: List[int] = field(default_factory=list)
    pids_seen: List[int] = field(default_factory=list)
    info: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k not in ("verdict", "info")}
        d["verdict"] = self.verdict.to_dict() if self.verdict else None
        return d


class Interrupted(Exception):
    """Ctrl-C or SIGTERM arrived while a module was building."""


def run_child(python: str, request: Dict[str, Any], env: Mapping[str, str],
              timeout: float) -> List[Dict[str, Any]]:
    """Run the child to completion (describe mode) and return its events.

    Guarded like a build: its own session, the whole tree ended on timeout.
    """
    with tempfile.TemporaryFile() as err:
        p = subprocess.Popen([python, CHILD, json.dumps(request)], stdout=subprocess.PIPE,
                             stderr=err, stdin=subprocess.DEVNULL, env=dict(env),
                             start_new_session=True)
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


def build_module(python: str, module: Dict[str, Any], spec_info: Dict[str, Any],
                 env: Mapping[str, str], timeout: float, stall_after: float, load: bool,
                 on_tick: Callable[[ModuleResult, float, Sample], None],
                 quarantine: Callable[[ModuleResult, str], Optional[str]]) -> ModuleResult:
    """Build one module under supervision; never returns with a process left running."""
    res = ModuleResult(key=module["key"], name=spec_info.get("name", ""),
                       module_dir=spec_info.get("module_dir") or "")
    req = {"mode": "build", "modules": [module], "load": load}
    errf = tempfile.TemporaryFile()  # noqa: SIM115 - closed in finally
    p = subprocess.Popen([python, CHILD, json.dumps(req)], stdout=subprocess.PIPE, stderr=errf,
                         stdin=subprocess.DEVNULL, env=dict(env), start_new_session=True)
    events: queue.Queue[Dict[str, Any]] = queue.Queue()
    reader = threading.Thread(target=_read, args=(p.stdout, events), daemon=True)
    reader.start()
    dirs = [d for d in (spec_info.get("module_dir"), spec_info.get("generated_dir")) if d]
    watch = TreeWatch(p.pid, dirs, spec_info.get("lock_path"))
    start = time.monotonic()
    last_progress = start
    seen: set = set()
    ended = False
    try:
        while True:
            now = time.monotonic()
            while not events.empty():
                ev = events.get_nowait()
                last_progress = now
                _apply(res, ev)
            if p.poll() is not None:
                reader.join(timeout=2.0)
                while not events.empty():
                    _apply(res, events.get_nowait())
                ended = True
                break
            s = watch.sample(now)
            seen.update(pr.pid for pr in watch.last_procs)
            res.peak_rss = max(res.peak_rss, s.rss)
            res.cpu_seconds += s.cpu_fraction * INTERVAL
            if s.progressed:
                last_progress = now
            res.seconds = now - start
            on_tick(res, now - start, s)
            if now - start >= timeout:
                res.status = "timed_out"
                res.verdict = verdicts.timed_out(res, timeout, _procs_text(watch, p.pid))
                break
            if now - last_progress >= stall_after:
                res.status = "stalled"
                res.verdict = _stall_verdict(res, watch, p.pid, stall_after, spec_info)
                break
            time.sleep(INTERVAL)
    except (KeyboardInterrupt, Interrupted):
        res.status = "interrupted"
        res.error = "interrupted (Ctrl-C/SIGTERM)"
    finally:
        seen.update(pr.pid for pr in watch.tree())
        foreign = watch.foreign_holder
        # Even after a clean exit, an orphaned ninja edge may linger in the session.
        res.survivors = terminate_tree(p.pid, sid=p.pid, grace=3.0)
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            res.survivors.append(p.pid)
        res.pids_seen = sorted(seen - ({foreign} if foreign else set()))
        res.seconds = time.monotonic() - start
        if not ended and res.module_dir:
            res.quarantined = quarantine(res, "foreign" if foreign else res.status)
        if ended and res.status in ("building", "queued"):
            errf.seek(0)
            tail = errf.read()[-3000:].decode("utf-8", "replace").strip().splitlines()
            res.status = "failed"
            res.error = res.error or (tail[-1] if tail else f"child exited {p.returncode}")
        if res.status == "failed" and res.verdict is None:
            res.verdict = verdicts.failed(res)
        errf.close()
    if res.status == "interrupted":
        raise Interrupted(res)
    return res


def _read(stream, q: queue.Queue[Dict[str, Any]]) -> None:
    for raw in iter(stream.readline, b""):
        ln = raw.decode("utf-8", "replace")
        if ln.startswith(TAG):
            try:
                q.put(json.loads(ln[len(TAG):]))
            except ValueError:
                pass
    stream.close()


def _apply(res: ModuleResult, ev: Dict[str, Any]) -> None:
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


def _procs_text(watch: TreeWatch, root: int) -> List[str]:
    return [describe_proc(p.pid) for p in watch.tree()][:8]


def _stall_verdict(res: ModuleResult, watch: TreeWatch, root: int, stall_after: float,
                   spec_info: Dict[str, Any]) -> Finding:
    procs = watch.tree()
    holder = watch.foreign_holder
    if holder:
        return verdicts.stalled_on_lock(res, stall_after, spec_info.get("lock_path", ""),
                                        describe_proc(holder), _procs_text(watch, root))
    leaf = blocked_leaf(procs, root)
    what = describe_proc(leaf) if leaf else ""
    if leaf:
        try:  # the edge's command line names the compiler even when it exec'd a helper
            parent = psutil.Process(leaf).parent()
            if parent is not None and parent.pid != root:
                what += f", child of {describe_proc(parent.pid)}"
        except psutil.Error:
            pass
    return verdicts.stalled_blocked(res, stall_after, what, _procs_text(watch, root))


def install_sigterm() -> Callable[[], None]:
    """Turn SIGTERM into Interrupted so ``docker stop`` gets the same clean-up as Ctrl-C."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):  # noqa: ARG001
        raise Interrupted("SIGTERM")

    old = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, old)


def stderr_is_tty() -> bool:
    return sys.stderr.isatty()
