"""build-process-stuck: a FlashInfer compiler tree that is orphaned, stopped or not moving.

What: a ninja → nvcc → cicc/ptxas tree working on a ``cached_ops/<module>``
dir that (a) lost the Python that started it (re-parented to pid 1 or a
subreaper; see fidoctor.proctree), (b) has a process stopped (state T), or
(c) burnt no CPU and started/ended no step over the sampling window while
its module has no loadable ``.so``. Severity: error when stopped or orphaned
and idle; warning when only idle over the window with its Python alive (a
second look tells a pause from a hang). Only trees building into the
target's cache are judged. A tree that *is* progressing is reported
as ``info`` ("nvcc compiling <module> for 3 min, 1.4 GB, progressing") and
never gets a terminate fix (one thrashing at its memory cgroup's limit burns
CPU in reclaim, not progress: this probe then defers to build-memory-thrash,
and an idle or stopped one is marked as caused by it) — unless it is orphaned: then it is a ``warning``
(its server is gone, a restart compiles the same module beside it, doubling
the memory) whose terminate fix runs only when asked by name.
Why: from outside, "compiling for 9 minutes" and "hung for 9 minutes" look
the same. An orphaned ninja keeps its nvcc/cicc (≈3.4 GB each for FA3)
running for minutes after the server died; a stopped or blocked compile
holds the module's build forever, and any process waiting for that module
waits with it.
Fix: ``terminate-build-tree`` — TERM, a grace period, then KILL, by process
group where the group holds only tree members (ninja shares its Python
parent's group, which must survive), else by pid. Data: ``pids`` (every
tree member), ``pgids`` (groups safe to signal whole), ``sid`` (the tree's
session, to catch steps that start while it works), ``module_dir``,
``create_times`` ({pid: create_time}, to refuse a reused pid). For a stopped
tree the first advice is ``kill -CONT`` (someone may have pressed Ctrl-Z or
attached a debugger). Safety: caution (the module must be rebuilt; nothing
on disk is touched).
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional

from fidoctor.flashinfer.modnames import short_name
from fidoctor.model import Finding, Fix
from fidoctor.probes._facts import fmt_age, module_by_path, so_problem, stale_baton
from fidoctor.probes._memcg import thrashing_roots
from fidoctor.probes._trees import stuck_trees
from fidoctor.proctree import (
    fmt_rss,
    safe_pgids,
)
from fidoctor.snapshot import Snapshot

ID = "build-process-stuck"
REQUIRES = ("processes",)
ARGV_SHOWN = 160
THRASH = "build-memory-thrash"


def describe_proc(snap: Snapshot, p: Dict[str, Any]) -> str:
    """One evidence line: pid, name, state, age, CPU delta, RSS, argv."""
    age = snap.taken_at - p["create_time"] if p.get("create_time") else None
    argv = " ".join(p.get("argv") or [])
    if len(argv) > ARGV_SHOWN:
        argv = argv[:ARGV_SHOWN] + "…"
    state = p.get("state_code") or p.get("state") or "?"
    extra = " exited in window" if p.get("exited") else (" new in window" if p.get("appeared") else "")
    return (f"pid {p['pid']} {p.get('name')} [{state}] ppid {p.get('ppid')} pgid {p.get('pgid')} "
            f"age {fmt_age(age)} cpu +{p.get('cpu_delta_s', 0.0):.2f} s rss "
            f"{fmt_rss(p.get('rss_end') or p.get('rss'))} wchan {p.get('wchan') or '?'}{extra}: "
            f"{argv}")


def _for_evidence(tree: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Roots first (ninja…), then the busiest: the compilers burning CPU and memory,
    not the idle ``sh -c`` wrappers, must survive the cut to 12 lines."""
    roots = {r["pid"] for r in tree.get("roots") or [tree["root"]]}
    rest = sorted((p for p in tree["procs"] if p["pid"] not in roots),
                  key=lambda p: (-(p.get("cpu_delta_s") or 0.0), -(p.get("rss_end") or p.get("rss") or 0)))
    return [p for p in tree["procs"] if p["pid"] in roots] + rest


def _orphan_still_compiling(label: str, busiest: Dict[str, Any], s: Dict[str, Any], mod_dir: str,
                            data: Dict[str, Any], evidence: List[str],
                            baton: Optional[str] = None) -> Finding:
    """A killed server's compilers, still running: harmless alone, costly beside a restart.

    Measured on an H100 (h100-facts.md): after a SIGKILL the orphans of an FA3
    build ran ~70 s more at ~3.5 GB per cicc, wrote no ``.ninja_log``, so the
    restarted server recompiled everything beside them (~20 GB at once).
    FlashInfer 0.2.0–0.2.5 (``baton``: the module's torch baton, left stale by the
    kill) is different: a restart does not compile beside it, it waits on that
    baton forever (build-lock-held says so and removes it).
    """
    then = ("its torch baton is stale: a restart waits on it forever (see build-lock-held)"
            if baton else "a restart now compiles the same module beside it")
    return Finding(
        id=ID, severity="warning", subject=mod_dir, data=data,
        evidence=evidence + ["its objects are usually thrown away: a killed build writes no "
                             ".ninja_log, so the next start recompiles every step"],
        title=f"orphaned build of {label} still running ({busiest.get('name')}, "
        f"{fmt_age(s['age'])}, {fmt_rss(s['rss'])}): its server is gone; {then}",
        fixes=[
            Fix(description="Wait for it: an orphaned ninja exits after its in-flight steps "
                "(about a minute for an FA3 module on 16 cores), then restart",
                commands=[f"fidoctor diagnose   # until no {ID} finding is left"], safety="safe"),
            Fix(description="Or end it now to free its memory and CPU before restarting "
                "(asked for explicitly: fidoctor never stops a compiling build on its own)",
                commands=[f"fidoctor fix --only {ID} --use terminate-build-tree"],
                id="terminate-build-tree", safety="caution"),
        ],
    )


def _thrash_caused(f: Finding, thrash: bool) -> Finding:
    """A tree thrashing at its memory limit: build-memory-thrash is the cause of this one."""
    if thrash:
        f.caused_by = THRASH
        f.evidence.append(f"caused by {THRASH}: the tree sits at its memory cgroup's limit, "
                          "reclaiming and refaulting its own code")
    return f


def check(snap: Snapshot) -> Iterable[Finding]:
    thrash_roots = thrashing_roots(snap)
    pdata = snap.data("processes")
    window = pdata.get("sample_window_s") or 0.0
    groups = pdata.get("groups", {})
    modules = module_by_path(snap)
    for item in stuck_trees(snap):
        tree, s = item["tree"], item["sum"]
        mod_dir = tree["module_dir"]
        name = mod_dir.rstrip("/").rsplit("/", 1)[-1]
        label = short_name(name)
        mod = modules.get(mod_dir)
        so_state = so_problem(mod) if mod else "module dir not in the cache scan"
        root = tree["root"]
        evidence = [describe_proc(snap, p) for p in _for_evidence(tree)[:12]]
        if len(tree["procs"]) > 12:
            evidence.append(f"… and {len(tree['procs']) - 12} more processes")
        evidence.append(f"CPU over the {window:.2f} s window: +{s['cpu_delta']:.2f} s for the whole tree")
        if s["orphaned"]:
            evidence.append(
                f"root pid {root['pid']} ({root.get('name')}) was re-parented to pid "
                f"{root.get('ppid')} ({root.get('parent_name') or 'gone'}): the Python that "
                "started the build is gone")
        evidence.append(f"{mod_dir}: {so_state or 'has a loadable .so'}")
        data = {
            "module": name, "module_dir": mod_dir, "pids": s["pids"],
            "pgids": safe_pgids(s["pids"], groups), "sid": root.get("sid"),
            "create_times": {str(p["pid"]): p.get("create_time") for p in tree["procs"]},
            "orphaned": s["orphaned"], "progressing": s["progressing"],
            "stopped_pids": [p["pid"] for p in s["stopped"]], "cpu_delta_s": s["cpu_delta"],
        }
        busiest = s["busiest"]
        thrash = root["pid"] in thrash_roots
        if s["progressing"] and not s["stopped"] and s["orphaned"]:
            yield _thrash_caused(_orphan_still_compiling(label, busiest, s, mod_dir, data,
                                                         evidence, stale_baton(snap, mod_dir)),
                                 thrash)
            continue
        if s["progressing"] and not s["stopped"] and thrash:
            continue  # its CPU is in-kernel reclaim, not progress: build-memory-thrash says so
        if s["progressing"] and not s["stopped"]:
            yield Finding(
                id=ID, severity="info", subject=mod_dir, data=data, evidence=evidence,
                title=f"{busiest.get('name')} compiling {label} for {fmt_age(s['age'])}, "
                f"{fmt_rss(s['rss'])}, progressing",
            )
            continue
        terminate = Fix(
            description="Terminate this build tree (TERM, grace period, KILL, by process group "
            "where the group holds only the tree); the module is rebuilt on next use",
            commands=[f"fidoctor fix --only {ID}",
                      f"# by hand: kill -TERM {' '.join(map(str, s['pids']))}; sleep 10; "
                      f"kill -KILL {' '.join(map(str, s['pids']))}"],
            id="terminate-build-tree", safety="caution",
        )
        if s["stopped"]:
            spids = " ".join(str(p["pid"]) for p in s["stopped"])
            fixes = [Fix(description="If it was stopped on purpose (Ctrl-Z, a debugger), resume it",
                         commands=[f"kill -CONT {spids}"], safety="safe")]
            if s["cpu_delta"] < 0.02:
                fixes.append(terminate)
            yield _thrash_caused(Finding(
                id=ID, severity="error", subject=mod_dir, data=data, fixes=fixes,
                evidence=evidence,
                title=f"build of {label} is stopped (state T: pid {spids}); it will never finish",
            ), thrash)
            continue
        why = "orphaned and making no progress" if s["orphaned"] else \
            f"no CPU progress in {window:.1f} s"
        sev = "error" if s["orphaned"] else "warning"
        if not s["orphaned"]:
            evidence.append("the Python that started it is alive; a longer look "
                            "(a second diagnose) tells a pause from a hang")
        yield _thrash_caused(Finding(
            id=ID, severity=sev, subject=mod_dir, data=data, fixes=[terminate], evidence=evidence,
            title=f"build of {label} is stuck ({why}) after {fmt_age(s['age'])}",
        ), thrash)
