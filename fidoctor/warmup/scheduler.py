"""The module-parallel warmup loop (see parallel.py for the why and the pieces).

One child in the target (one torch import) writes each module's build.ninja
when asked and loads the results at the end; everything else happens here,
every ``INTERVAL``: admit modules longest first while the budget and memory
allow, run their ninjas, watch each tree alone, finish each on its own.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from fidoctor.errors import FidoctorError
from fidoctor.fsutil import elf_header_problem, read_head
from fidoctor.kill import terminate_tree
from fidoctor.warmup import verdicts
from fidoctor.warmup.parallel import (
    INTERVAL,
    Admission,
    Budget,
    Slot,
    build_failed,
    drop_lock,
    end_tree,
    ninja_supports_jobserver,
    shares,
    short_reason,
    start_ninja,
    take_lock,
    weight,
    would_rebuild,
)
from fidoctor.warmup.result import ModuleResult
from fidoctor.warmup.supervisor import (
    Hooks,
    Interrupted,
    StartFailed,
    apply_event,
    procs_text,
    read_events,
    send_line,
    shield_cleanup,
    spawn_child,
    stall_verdict,
)
from fidoctor.warmup.watch import TreeWatch

READY_TIMEOUT = 180.0
WRITE_TIMEOUT = 120.0


class NotParallel(Exception):
    """This target cannot be built module-parallel (the message says why): go sequential."""


def build_parallel(python: str, modules: List[Dict[str, Any]], mem_class: Dict[str, str],
                   env: Dict[str, str], timeout_of: Callable[[str], float],
                   stall_after: float, load: bool, hooks: Hooks, total: int, reason: str,
                   available: int, rebuild: bool = False,
                   inflight: Optional[Callable[[List[Tuple[ModuleResult, int, int]]], None]]
                   = None) -> Tuple[List[ModuleResult], Dict[str, Any]]:
    """Build ``modules`` several at once; (results, the child's info). Never leaves a process."""
    req = {"mode": "serve", "modules": modules, "load": load}
    errf = tempfile.TemporaryFile()  # noqa: SIM115 - closed in finally
    try:
        p = spawn_child(python, req, env, subprocess.PIPE, errf)
    except FidoctorError:
        errf.close()
        raise
    events: queue.Queue[Dict[str, Any]] = queue.Queue()
    threading.Thread(target=read_events, args=(p.stdout, events), daemon=True).start()
    results: List[ModuleResult] = []
    by_key: Dict[str, Slot] = {}
    running: List[Slot] = []
    waiting: List[Slot] = []
    budget: Optional[Budget] = None
    interrupted = False

    def finish(s: Slot, status: Optional[str] = None) -> None:
        if status:
            s.res.status = status
        if s.res.info.get("previous_txid") and s.res.status in ("failed", "stalled",
                                                                 "timed_out"):
            _put_back(s, hooks, env)
        if s.res.status == "failed" and s.res.verdict is None:
            s.res.verdict = verdicts.failed(s.res)
        s.res.seconds = time.monotonic() - (s.started or s.waited_since or t_ready)
        s.state = "finished"
        drop_lock(s)
        for group in (running, waiting):
            if s in group:
                group.remove(s)
        if budget is not None:
            if s.proc is not None and s.res.status in ("stalled", "timed_out"):
                budget.give(max(s.edges_running - 1, 0))  # a killed ninja's tokens are lost
            budget.reconcile(len(running))
        results.append(s.res)
        hooks.end(s.res)

    try:
        info, specs, gen_failed = _wait_ready(p, events)
        t_ready = time.monotonic()
        for ev in gen_failed:
            r = ModuleResult(key=ev["key"])
            apply_event(r, ev)
            r.verdict = verdicts.failed(r)
            results.append(r)
            hooks.end(r)
        ninja = shutil.which("ninja", path=env.get("PATH"))
        if not ninja:
            raise NotParallel("no ninja on the target's PATH")
        old = [k for k, ev in specs.items() if not ev.get("own_ninja")]
        if old:
            raise NotParallel(f"FlashInfer {info.get('version')} runs one ninja over a shared "
                              ".ninja_log (before 0.6.1): modules are built one at a time")
        budget = Budget(total, ninja_supports_jobserver(ninja), reason)
        budget.open()
        how = "one jobserver pool" if budget.jobserver else "static -j per module"
        admission = Admission(budget, available)
        arch = _arch_dir(info)
        pending = sorted((Slot(ModuleResult(key=k), ev, mem_class[k],
                               weight(k, ev, mem_class[k], arch))
                          for k, ev in specs.items()), key=lambda s: -s.weight)
        for s in pending:
            apply_event(s.res, s.ev)
            s.res.info["compiled"] = bool(s.ev.get("compiled"))
            s.res.max_jobs = total
            s.res.jobs_reason = f"MAX_JOBS={total}: shared by all modules ({how}); {reason}"
            by_key[s.res.key] = s
        early: List[Dict[str, Any]] = []
        seen_idle = [0]
        while pending or running or waiting:
            now = time.monotonic()
            while not events.empty():
                early.append(events.get_nowait())
            for ev in early:
                s_ev = by_key.get(ev.get("key") or "")
                if s_ev is None or s_ev.state != "writing":
                    continue
                if ev.get("event") == "written":
                    s_ev.ev.update(workdir=ev["workdir"], ninja_file=ev["ninja_file"])
                    _written(s_ev, ninja, budget, env, running, rebuild, hooks, p, finish)
                elif ev.get("event") == "failed":
                    apply_event(s_ev.res, ev)
                    finish(s_ev, "failed")
            early = []
            for s in list(waiting):  # a lock another live process holds
                _retry_lock(s, now, stall_after, waiting, running, hooks, p, finish)
            if waiting:
                budget.reconcile(len(running))  # best effort: a token may be free later
            admitted: List[Slot] = []
            idle = _idle_tokens(budget, running, seen_idle)
            while pending and admission.fits(running, pending[0], idle):
                idle = None  # the rest of this pass: by unfinished edges (twins at the start)
                if not budget.reconcile(len(running) + 1):
                    budget.reconcile(len(running))
                    break  # every token is in use: a slot frees when an edge ends
                s = pending.pop(0)
                s.waited_since = now
                s.lock_fd, holders = take_lock(s.ev["lock_path"])
                if s.lock_fd is None:
                    s.watch = TreeWatch(holders[0] if holders else os.getpid(),
                                        [s.ev.get("module_dir") or ""], s.ev["lock_path"])
                    s.last_progress = now
                    waiting.append(s)
                    budget.reconcile(len(running))
                    hooks.prepare(s.res, s.ev)
                    continue
                hooks.prepare(s.res, s.ev)
                _ask_write(s, p, running)
                admitted.append(s)
            _share_out(admitted, running, budget)
            if budget.reserve and not any(o.share and o.state == "writing" for o in running):
                budget.unstage()  # a twin that never started (cached, failed): its share
            for s in list(running):
                _guard(s, now, timeout_of, stall_after, hooks, finish)
            if p.poll() is not None:  # the target died: nothing more can be written
                for s in [s for s in running if s.state == "writing"] + pending:
                    s.res.error = "the target interpreter exited before writing build.ninja"
                    finish(s, "failed")
                pending = []
            if inflight is not None:
                inflight([(s.res, s.edges_done, s.total_edges) for s in running
                          if s.state == "building"])
            try:
                early.append(events.get(timeout=INTERVAL))
            except queue.Empty:
                pass
        if load and info.get("gpu"):
            _load_all(p, events, [r for r in results if r.status in ("done", "cached")],
                      timeout_of)
    except (KeyboardInterrupt, Interrupted):
        interrupted = True
    finally:
        unshield = shield_cleanup()
        try:
            for s in running + waiting:
                if s.state == "building":
                    s.res.survivors = end_tree(s)
                    s.res.quarantined = hooks.quarantine(s.res, "interrupted")
                s.res.status = "interrupted"
                s.res.error = "interrupted (Ctrl-C/SIGTERM)"
                drop_lock(s)
                results.append(s.res)
            send_line(p, {"op": "quit"})
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            left = terminate_tree(p.pid, sid=p.pid, grace=2.0)
            for r in results:  # a module that never got a ninja of its own: the child was its tree
                r.pids_seen = r.pids_seen or [p.pid]
                r.survivors = sorted(set(r.survivors) | set(left))
            errf.close()
            if budget is not None:
                budget.close()
        finally:
            unshield()
    if interrupted:
        raise Interrupted(results)
    return results, info


def _restore_ninja(s: Slot) -> None:
    """Put back the build.ninja a left-alone module was built with (we hold its lock), so
    the next start in the module's own environment finds it exactly as before."""
    if s.old_ninja is None:
        return
    path = os.path.join(s.ev.get("module_dir") or "", "build.ninja")
    tmp = f"{path}.fidoctor-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(s.old_ninja)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        s.res.info["ninja_restore_error"] = e.strerror or str(e)


def _arch_dir(info: Dict[str, Any]) -> Optional[str]:
    """``90a`` from the workspace the target reported (its last path part), if any."""
    jit = info.get("workspace") or ""
    return os.path.basename(jit.rstrip("/")) or None


def _put_back(s: Slot, hooks: Hooks, env: Dict[str, str]) -> None:
    """A rebuild asked for failed: the attempt goes aside, the previous module comes back."""
    from fidoctor.warmup.quarantine import put_back

    previous = s.res.info["previous_txid"]
    if s.res.status == "failed" and os.path.isdir(s.res.module_dir):
        s.res.quarantined = hooks.quarantine(s.res, "failed rebuild") or s.res.quarantined
    if os.path.lexists(s.res.module_dir):
        s.res.info["note"] = ("the previous module stays aside (its dir is taken): "
                              f"fidoctor undo --id {previous}")
        return
    why = put_back(previous, env)
    s.res.info["note"] = (f"the rebuild failed; the previous module could not be put back "
                          f"({why}): fidoctor undo --id {previous}" if why else
                          "the rebuild failed; the previous module was put back (it loads as "
                          "before)")


def _wait_ready(p: subprocess.Popen, events: queue.Queue) -> Tuple[Dict[str, Any],
                                                                  Dict[str, Dict[str, Any]],
                                                                  List[Dict[str, Any]]]:
    """The child's info, its module specs and the modules it could not generate."""
    info: Dict[str, Any] = {}
    specs: Dict[str, Dict[str, Any]] = {}
    failed: List[Dict[str, Any]] = []
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        try:
            ev = events.get(timeout=INTERVAL)
        except queue.Empty:
            if p.poll() is not None and events.empty():
                break
            continue
        kind = ev.get("event")
        if kind == "info":
            info = {k: v for k, v in ev.items() if k not in ("event", "t")}
        elif kind == "spec":
            specs[ev["key"]] = ev
        elif kind == "failed":
            failed.append(ev)
        elif kind == "fatal":
            raise StartFailed(ev.get("error") or "the target could not start")
        elif kind == "ready":
            return info, specs, failed
    raise StartFailed("the target interpreter did not get ready "
                      f"(exit {p.poll()}) within {READY_TIMEOUT:.0f} s")


def _ask_write(s: Slot, p: subprocess.Popen, running: List[Slot]) -> None:
    if s.ev.get("compiled") and not s.moved_for_rebuild and s.old_ninja is None:
        # A module that is left alone keeps the build.ninja it was built with.
        s.old_ninja = read_head(os.path.join(s.ev.get("module_dir") or "", "build.ninja"),
                                4 << 20)
    s.state = "writing"
    s.started = 0.0
    if s not in running:
        running.append(s)
    send_line(p, {"op": "write", "key": s.res.key})


def _written(s: Slot, ninja: str, budget: Budget, env: Dict[str, str], running: List[Slot],
             rebuild: bool, hooks: Hooks, p: subprocess.Popen, finish) -> None:
    """build.ninja is written: cached, moved aside for a rebuild, or start its ninja."""
    so = s.ev.get("so_path") or ""
    benv = budget.env(env)
    if s.ev.get("compiled") and not s.moved_for_rebuild and os.path.exists(so):
        problem = elf_header_problem(so)
        if problem is None:
            again, why = would_rebuild(ninja, s.ev["workdir"], env)
            if again is False:
                finish(s, "cached")
                return
            if not rebuild:
                s.res.info["rebuild_pending"] = why[:5]
                short = "; ".join(short_reason(w) for w in why[:2])
                _restore_ninja(s)
                s.res.info["note"] = (
                    f"loads as it is, but this environment would rebuild it ({short}): left "
                    "alone; --rebuild rebuilds it (the old module is moved aside first)"
                    if again else f"ninja could not say whether it is current ({short}); "
                    "left alone")
                finish(s, "cached")
                return
        if problem is None:
            # The child has just written this environment's build.ninja over the one the
            # module was built with: the copy moved aside (which a failed rebuild puts back,
            # or fidoctor undo restores) must be the module exactly as it was.
            _restore_ninja(s)
        moved = hooks.quarantine(s.res, "rebuild" if problem is None else f"broken .so ({problem})")
        if not moved:
            s.res.error = "could not move the old module aside before rebuilding; left alone"
            finish(s, "failed")
            return
        s.res.quarantined = moved
        if problem is None:  # a good module: put it back if the rebuild fails
            s.res.info["previous_txid"] = s.res.info.get("quarantine_txid")
        s.moved_for_rebuild = True
        _ask_write(s, p, running)
        return
    jobs = None
    if not budget.jobserver:
        others = sum(o.jobs for o in running if o is not s and o.state == "building")
        jobs = max(1, min(int(s.ev.get("edges") or 1), budget.total - others))
        if s.share:
            jobs = min(jobs, s.share)
    elif s.share:
        budget.stage(s.share - 1)  # its implicit job is the first lane
    s.jobs = jobs or 0
    start_ninja(s, ninja, benv, jobs)
    if budget.jobserver and s.share:
        budget.wait_taken(1.5)
        if not any(o.share and o.state == "writing" for o in running if o is not s):
            budget.unstage()
    hooks.start(s.res)


def _idle_tokens(budget: Budget, running: List[Slot], seen: List[int]) -> Optional[int]:
    """Jobserver tokens idle in the pool now and at the last poll (the smaller; a token a
    ninja gives back it takes again at once), 0 while a module is starting; None without
    a jobserver (static ``-j``: the running modules' unfinished edges decide)."""
    if not budget.jobserver:
        return None
    if budget.reserve or any(s.state == "writing" for s in running):
        seen[0] = 0
        return 0
    now = budget.idle()
    idle, seen[0] = min(now, seen[0]), now
    return idle


def _share_out(admitted: List[Slot], running: List[Slot], budget: Budget) -> None:
    """Modules of one kind admitted together start with even lanes (``parallel.shares``)
    when they cannot all have one per edge; a module of another kind takes what is left."""
    twins = [s for s in admitted if s.mem_class == admitted[0].mem_class] if admitted else []
    if len(twins) < 2:
        return
    busy = sum(o.edges_running for o in running if o.state == "building")
    free = budget.total - busy
    demands = [max(s.total_edges - 1, 1) for s in twins]
    if sum(demands) <= free:
        return
    for s, k in zip(twins, shares(demands, free)):
        s.share = k
        s.res.jobs_reason += f"; starts on {k} of the {free} free slots beside its twin(s)"


def _retry_lock(s: Slot, now: float, stall_after: float, waiting: List[Slot],
                running: List[Slot], hooks: Hooks, p: subprocess.Popen, finish) -> None:
    s.lock_fd, holders = take_lock(s.ev["lock_path"])
    if s.lock_fd is not None:
        waiting.remove(s)
        _ask_write(s, p, running)
        return
    assert s.watch is not None
    smp = s.watch.sample(now)
    if smp.progressed:
        s.last_progress = now
    if now - s.last_progress >= stall_after:
        holder = s.watch.foreign_holder or (holders[0] if holders else 0)
        from fidoctor.proctree import describe_live

        s.res.verdict = verdicts.stalled_on_lock(s.res, stall_after, s.ev["lock_path"],
                                                 describe_live(holder), [])
        hooks.quarantine(s.res, "foreign")
        finish(s, "stalled")


def _guard(s: Slot, now: float, timeout_of: Callable[[str], float], stall_after: float,
           hooks: Hooks, finish) -> None:
    """One module's ninja: finished, failed, stalled or timed out — judged alone."""
    if s.state == "writing":
        if s.waited_since and now - s.waited_since > WRITE_TIMEOUT:
            s.res.error = f"the target did not write build.ninja within {WRITE_TIMEOUT:.0f} s"
            finish(s, "failed")
        return
    if s.state != "building" or s.proc is None or s.watch is None:
        return
    if s.proc.poll() is not None:
        if s.reader is not None:
            s.reader.join(timeout=2.0)
        s.res.pids_seen = sorted({pr.pid for pr in s.watch.last_procs} | {s.proc.pid})
        if s.proc.returncode == 0:
            so = s.ev.get("so_path") or ""
            s.res.info["so_size"] = os.path.getsize(so) if os.path.exists(so) else None
            finish(s, "done")
        else:
            build_failed(s)
            finish(s)
        return
    smp = s.watch.sample(now)
    s.count_running()
    s.res.pids_seen = sorted(set(s.res.pids_seen) | {pr.pid for pr in s.watch.last_procs})
    if smp.progressed:
        s.last_progress = now
    s.res.peak_rss = max(s.res.peak_rss, smp.rss)
    s.res.cpu_seconds += smp.cpu_fraction * INTERVAL
    s.res.seconds = now - s.started
    hooks.tick(s.res, now - s.started, smp)
    limit = timeout_of(s.res.key)
    if now - s.started >= limit:
        s.res.verdict = verdicts.timed_out(s.res, limit, procs_text(s.watch, s.proc.pid))
        status = "timed_out"
    elif now - s.last_progress >= stall_after:
        s.res.verdict = stall_verdict(s.res, s.watch, s.proc.pid, stall_after, s.ev)
        status = "stalled"
    else:
        return
    s.res.survivors = end_tree(s)
    drop_lock(s)
    s.res.quarantined = hooks.quarantine(s.res, status)
    finish(s, status)


def _load_all(p: subprocess.Popen, events: queue.Queue, done: List[ModuleResult],
              timeout_of: Callable[[str], float]) -> None:
    """Load each built module in the target (GPU boxes): FlashInfer's own ninja is a no-op."""
    for r in done:
        send_line(p, {"op": "load", "key": r.key})
        deadline = time.monotonic() + timeout_of(r.key)
        while time.monotonic() < deadline:
            try:
                ev = events.get(timeout=INTERVAL)
            except queue.Empty:
                if p.poll() is not None:
                    return
                continue
            if ev.get("key") != r.key:
                continue
            if ev.get("event") == "failed":
                apply_event(r, ev)
                r.verdict = verdicts.failed(r)
            break
