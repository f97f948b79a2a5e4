"""build-lock-held: a JIT lock that is stale, or held by a process that is not building.

What: (a) a torch FileBaton ``cached_ops/<name>/lock`` (FlashInfer ≤ 0.2.5)
that no process has open: stale, every later build of that module spins on
it forever; (b) a flock lock (``cached_ops/tmp/<name>.lock``, or
``cached_ops/<name>.lock``) whose holder in ``/proc/locks`` is stopped, has
a stuck compiler tree, is orphaned, or is building nothing and burning no CPU,
worse when others wait behind it. A holder that is compiling and progressing
is a wait, not a hang: ``info`` when someone waits, silent otherwise. A flock
file with no holder is harmless (it stays behind, 0 bytes, after every
normal build) and is never reported.
Why: multi-rank servers serialize on one lock per module; one stuck holder
stalls every rank with no log line at all (filelock waiters poll silently).
Waiters are named with a confidence (seen / likely / possible, see the
``locks`` gatherer): filelock waiters never appear in ``/proc/locks``.
Fix: ``remove-stale-baton`` for (a), only when no process has the file open
(data: ``lock_path``; safety safe, or caution when some processes could not
be inspected). For a holder with a stuck build tree, ``terminate-build-tree``
(same data as build-process-stuck: ``pids``, ``pgids``, ``sid``,
``module_dir``, ``create_times``); the holder's build then fails and the
kernel releases the flock. A holder doing nothing gets advice only (look at
it with py-spy; killing a server is the user's call). Finding data:
``lock_path``, ``style``, ``module``, ``module_dir``, ``holder_pids``,
``waiter_pids``, ``waiters``; a stale baton of a FlashInfer module also
``affects`` (its module dir: the cause of that module's jit-log-unfinished and
cache-incomplete-module, see fidoctor/causes.py). A 0.2.0–0.2.5 waiter holds
the module's flock while it spins on the baton: it is named as the baton's
waiter (the ``locks`` gatherer), and that flock gets no finding of its own.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Tuple

from fidoctor.flashinfer.modnames import short_name
from fidoctor.model import Finding, Fix
from fidoctor.probes._facts import fmt_age, quote, stale_baton
from fidoctor.probes._trees import stuck_trees
from fidoctor.proctree import PROGRESS_CPU_S, STOPPED, safe_pgids
from fidoctor.snapshot import Snapshot

ID = "build-lock-held"
REQUIRES = ("locks",)
# A stale baton of a FlashInfer module is why its build never finishes (jit-log-unfinished)
# and why it stays half-built: its finding carries data["affects"] (fidoctor/causes.py).
CAUSE = True


def _tree_of(snap: Snapshot, holder: int, module_dir: str) -> Optional[Dict[str, Any]]:
    """The compiler tree the holder started (or that builds its module)."""
    items = stuck_trees(snap, target_only=False)
    for it in items:
        if holder in (it["tree"]["root"].get("ppid_chain") or []):
            return it
    for it in items:
        if it["tree"]["module_dir"] == module_dir:
            return it
    return None


def _holder(snap: Snapshot, d: Dict[str, Any], lk: Dict[str, Any]) -> Tuple[str, str, Any]:
    """(verdict, what it is doing, tree) for one holder; verdicts: building, stuck, idle, busy."""
    pid = d["pid"]
    tree = _tree_of(snap, pid, lk["module_dir"])
    desc = (f"pid {pid} {d.get('name')} [{d.get('state_code') or d.get('state')}] wchan "
            f"{d.get('wchan') or '?'} cpu +{d.get('cpu_delta_s', 0.0):.2f} s")
    if d.get("state") == "gone" or d.get("exited"):
        return "gone", desc + " (exited during the look)", None
    if d.get("state") in STOPPED:
        return "stuck", desc + ": stopped (state T)", None
    if tree is not None:
        s = tree["sum"]
        root = tree["tree"]["root"]
        what = f"{root.get('name')} pid {root['pid']} building {lk.get('module')}"
        if s["progressing"] and not s["stopped"]:
            return "building", f"{desc}; {what}, progressing (+{s['cpu_delta']:.2f} s CPU)", tree
        return "stuck", f"{desc}; {what}, stuck (no progress or stopped)", tree
    if d.get("compiler_descendants"):
        return "building", f"{desc}; has compiler children {d['compiler_descendants'][:6]}", None
    orphan = ", its parent is gone (re-parented)" if d.get("orphaned") else ""
    if (d.get("cpu_delta_s") or 0.0) >= PROGRESS_CPU_S:
        return "busy", f"{desc}: running, but building nothing{orphan}", None
    return "idle", f"{desc}: building nothing and burning no CPU{orphan}", None


def _waiters(lk: Dict[str, Any]) -> List[str]:
    return [f"waiter pid {w['pid']} ({w['confidence']}): {'; '.join(w.get('reasons', []))}"
            for w in lk.get("waiters", [])]


def _base(lk: Dict[str, Any], snap: Snapshot) -> Tuple[List[str], Dict[str, Any]]:
    age = snap.taken_at - lk["mtime"] if lk.get("mtime") else None
    ev = [f"{lk['path']} ({lk['style']}, modified {fmt_age(age)} ago)"]
    data = {"lock_path": lk["path"], "style": lk["style"], "module": lk.get("module"),
            "module_dir": lk.get("module_dir"), "holder_pids": [],
            "waiter_pids": [w["pid"] for w in lk.get("waiters", [])],
            "waiters": lk.get("waiters", [])}
    if lk.get("extension"):
        # A torch extension built at import by a FlashInfer dependency (tvm-ffi's c_dlpack
        # in 0.4.x) or by cpp_extension.load: same baton, outside FlashInfer's cache.
        data["extension"] = lk["extension"]
        ev.append(f"torch extension {lk['extension']} under {lk.get('workspace')} "
                  "(TORCH_EXTENSIONS_DIR): built at import, e.g. by apache-tvm-ffi's "
                  "load_torch_c_dlpack_extension; every import waits on this baton")
    return ev, data


def _what(lk: Dict[str, Any]) -> str:
    if lk.get("extension"):
        return f"torch extension {lk['extension']}"
    return short_name(lk.get("module") or "?")


def _stale_baton(snap: Snapshot, lk: Dict[str, Any], scan: Dict[str, Any]) -> Finding:
    ev, data = _base(lk, snap)
    denied = scan.get("denied", 0)
    ev.append(f"no process has it open (/proc/*/fd of {scan.get('processes', 0)} processes)")
    if denied:
        ev.append(f"{denied} processes could not be inspected (other users): run as root to be sure")
    ev += _waiters(lk)
    n = len(lk.get("waiters", []))
    tail = f"; {n} process(es) spin on it" if n else "; the next build of it will spin forever"
    if lk.get("extension"):
        # Outside FlashInfer's cache: fidoctor fix leaves it alone, so this is advice only.
        return Finding(
            id=ID, severity="error", subject=lk["path"], data=data, evidence=ev,
            title=f"stale torch FileBaton lock for {_what(lk)}{tail}",
            fixes=[Fix(description="Remove the stale baton (nothing has it open; torch's "
                       "extensions dir is not FlashInfer's cache, so fidoctor fix leaves it "
                       "to you); the waiters proceed and rebuild the extension",
                       commands=[f"rm -f {quote(lk['path'])}"], safety="caution")])
    data["affects"] = [lk["module_dir"]] if lk.get("module_dir") else []
    return Finding(
        id=ID, severity="error", subject=lk["path"], data=data, evidence=ev,
        title=f"stale torch FileBaton lock for {_what(lk)}{tail}",
        fixes=[Fix(description="Remove the stale baton (nothing has it open); waiters proceed",
                   commands=[f"fidoctor fix --only {ID}",
                             f"# by hand: rm -f {quote(lk['path'])}"], id="remove-stale-baton",
                   safety="caution" if denied else "safe")],
    )


def check(snap: Snapshot) -> Iterable[Finding]:
    ldata = snap.data("locks")
    procs = ldata.get("procs", {})
    groups = snap.data("processes").get("groups", {})
    for lk in ldata.get("locks", []):
        baton = lk.get("style") == "baton"
        holders = lk.get("open_by", []) if baton else lk.get("holders", [])
        if baton and not holders:
            yield _stale_baton(snap, lk, ldata.get("fd_scan", {}))
            continue
        if not holders:
            continue  # a flock file nobody holds: the normal leftover of every build
        if lk.get("module_dir") and stale_baton(snap, lk["module_dir"]):
            continue  # 0.2.0-0.2.5: its holder spins on the module's stale baton (said there)
        ev, data = _base(lk, snap)
        data["holder_pids"] = list(holders)
        if lk.get("match"):
            ev.append(f"/proc/locks holder(s) {holders} matched by {lk['match']} "
                      f"({lk.get('dev_hex')}:{lk.get('ino')})")
        verdicts = []
        fixes: List[Fix] = []
        for pid in holders:
            d = procs.get(str(pid)) or {"pid": pid, "state": "gone"}
            verdict, what, tree = _holder(snap, d, lk)
            verdicts.append(verdict)
            ev.append(f"holder {what}")
            if verdict == "stuck" and tree is not None:
                s = tree["sum"]
                data.update(pids=s["pids"], pgids=safe_pgids(s["pids"], groups),
                            module_dir=tree["tree"]["module_dir"],
                            sid=tree["tree"]["root"].get("sid"),
                            create_times={str(p["pid"]): p.get("create_time")
                                          for p in tree["tree"]["procs"]})
                fixes.append(Fix(
                    description="Terminate the holder's stuck build tree; its build fails and "
                    "the kernel releases the lock", id="terminate-build-tree", safety="caution",
                    commands=[f"fidoctor fix --only {ID}",
                              f"# by hand: kill -TERM {' '.join(map(str, s['pids']))}"]))
            elif verdict == "stuck":
                fixes.append(Fix(description="If it was stopped on purpose, resume it",
                                 commands=[f"kill -CONT {pid}"], safety="safe"))
            elif verdict == "idle":
                fixes.append(Fix(
                    description="See where the holder is stuck; if it is dead weight, stop it "
                    "(the kernel then releases the lock)",
                    commands=[f"py-spy dump --pid {pid}", f"kill {pid}"], safety="risky"))
        ev += _waiters(lk)
        waiting = bool(lk.get("waiters"))
        who = f"{len(lk['waiters'])} process(es) wait" if waiting else "nobody waits yet"
        if all(v in ("building", "busy", "gone") for v in verdicts):
            if waiting and "building" in verdicts:
                yield Finding(
                    id=ID, severity="info", subject=lk["path"], data=data, evidence=ev,
                    title=f"{who} for {_what(lk)} while pid "
                    f"{holders[0]} compiles it: a wait, not a hang")
            continue
        if "stuck" in verdicts:
            sev, state = "error", "a stuck or stopped build"
        else:
            sev, state = ("error" if waiting else "warning"), "a process that is building nothing"
        yield Finding(
            id=ID, severity=sev, subject=lk["path"], data=data, evidence=ev, fixes=fixes,
            title=f"JIT lock of {_what(lk)} is held by {state} ({who})")
