"""Describe process trees: who started a build, what it has become, is it moving.

Two kinds of helpers live here, both read-only (termination belongs to the
warmup/fix code, never here):

* pure functions over the process dicts stored in a snapshot's ``processes``
  section (``pid``, ``ppid``, ``name``, ``state``, ``cpu_delta_s``…), which the
  probes use, so judging stays replayable;
* ``scan_table`` / ``read_wchan`` / ``describe_live``, which read ``/proc`` for
  callers that watch live processes (the gatherers, warmup).

"Orphaned" is the question the issue hinges on, and it cannot be asked
directly: the Python that started a build is gone by definition. What stays
behind is where its children were re-parented to: pid 1, or the nearest
*child subreaper* (systemd --user, tini, a container runtime, a test harness
that called ``prctl(PR_SET_CHILD_SUBREAPER)``). FlashInfer and torch start
ninja with plain ``subprocess`` (same session as the Python), so the root of a
build tree is judged orphaned when its parent is

* gone (no such pid), or
* pid 1 and not a Python interpreter (in a container the server itself may
  be pid 1, and then ninja's parent *is* the Python), or
* in a different session than the root: a subreaper adopted it; the Python
  that started it shared its session. (Not applied to a process that leads
  its own session, e.g. a server started with setsid: its parent is in
  another session by design.)

A shell that runs ninja by hand shares ninja's session, so it is not an orphan.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from fidoctor.procfs import read_proc, read_stat_raw, split_stat

# A tree whose processes together burnt less CPU than this over the window made
# no progress (the kernel accounts CPU in 10 ms ticks).
PROGRESS_CPU_S = 0.02
STOPPED = ("stopped", "tracing-stop", "T", "t")
# psutil status strings and their /proc/PID/stat letters.
STATE_LETTER = {
    "running": "R", "sleeping": "S", "disk-sleep": "D", "stopped": "T", "tracing-stop": "t",
    "zombie": "Z", "dead": "X", "idle": "I", "parked": "P", "waking": "W", "wake-kill": "K",
}
# Kernel wait channels of a process parked in sleep(): a poll loop between rounds. Python
# <= 3.10's time.sleep() is select(), which the kernel parks in poll_schedule_timeout (a
# filelock waiter on a Python 3.10 server looks like that).
SLEEP_WCHANS = ("hrtimer_nanosleep", "do_nanosleep", "clock_nanosleep", "nanosleep",
                "schedule_hrtimeout_range", "do_select", "do_sys_poll", "poll_schedule_timeout")


def is_python_exe(exe: Optional[str], name: Optional[str] = None) -> bool:
    """True for a CPython/PyPy interpreter, judged by its executable, else its comm.

    The comm alone misleads: torch renames the main thread ``pt_main_thread``
    and servers call setproctitle, but ``/proc/PID/exe`` still names python.
    """
    for s in (exe, name):
        if s:
            base = os.path.basename(s.replace(" (deleted)", ""))
            if base.startswith(("python", "pypy")):
                return True
    return False


def is_orphaned(root: Dict[str, Any]) -> bool:
    """Whether a build tree's root was re-parented (see the module docstring).

    ``root`` carries ``ppid``, ``sid`` and the facts about its parent recorded
    by the gatherer: ``parent_exists``, ``parent_sid``, ``parent_is_python``.
    """
    if not root.get("parent_exists", True):
        return True
    ppid = root.get("ppid")
    if ppid in (0, 1) and not root.get("parent_is_python"):
        return True
    psid, sid = root.get("parent_sid"), root.get("sid")
    if sid is not None and sid == root.get("pid"):
        return False  # it leads its own session: its parent's session says nothing
    return psid is not None and sid is not None and psid != sid


def children_map(procs: Iterable[Dict[str, Any]]) -> Dict[int, List[int]]:
    kids: Dict[int, List[int]] = {}
    for p in procs:
        kids.setdefault(p.get("ppid") or 0, []).append(p["pid"])
    return kids


def descendants(pid: int, procs: Iterable[Dict[str, Any]]) -> List[int]:
    """Pids below ``pid`` among ``procs`` (breadth first, ``pid`` excluded)."""
    kids = children_map(procs)
    out: List[int] = []
    todo = list(kids.get(pid, []))
    seen: Set[int] = {pid}
    while todo:
        p = todo.pop(0)
        if p in seen:
            continue
        seen.add(p)
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def build_trees(procs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Group build processes into trees, one per topmost process on a module dir.

    A root is a process with a module dir whose parent has none (usually
    ninja under Python; an nvcc whose ninja died; a bare cicc). Members are
    all its descendants in ``procs``, whatever their names. Returns dicts
    ``{"root": proc, "procs": [procs in the tree], "module_dir": …}``.
    """
    by_pid = {p["pid"]: p for p in procs}
    trees: List[Dict[str, Any]] = []
    for p in procs:
        if not p.get("module_dir"):
            continue
        parent = by_pid.get(p.get("ppid") or 0)
        if parent is not None and parent.get("module_dir"):
            continue
        members = [p] + [by_pid[d] for d in descendants(p["pid"], procs) if d in by_pid]
        trees.append({"root": p, "procs": members, "module_dir": p.get("module_dir")})
    trees.sort(key=lambda t: t["root"]["pid"])
    return _merge_by_build(trees)


def _merge_by_build(trees: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One tree per (module dir, session): when an orphaned ninja exits, each of its
    in-flight ``sh -c nvcc`` chains is re-parented on its own, but it is still one build.

    A root whose parent is a live Python (the ninja of a server that is still there) is
    never merged: two ranks of one job share a session, and on the H200
    (tests/fixtures/real-h200/snap_kill.json) the waiter's live rebuild of a module sat
    beside the killed holder's orphaned chains; merged, it took the orphans' warning and
    their terminate fix."""
    merged: Dict[tuple, Dict[str, Any]] = {}
    for t in trees:
        root = t["root"]
        live = root.get("parent_is_python") and not root.get("orphaned")
        key = (t["module_dir"], root.get("sid"), root["pid"] if live else None)
        if key in merged and key[1] is not None:
            merged[key]["procs"].extend(t["procs"])
            merged[key]["roots"].append(t["root"])
        else:
            merged[key] = dict(t, procs=list(t["procs"]), roots=[t["root"]])
    return list(merged.values())


def cpu_delta(procs: Iterable[Dict[str, Any]]) -> float:
    return round(sum(p.get("cpu_delta_s") or 0.0 for p in procs), 3)


def stopped(procs: Iterable[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return [p for p in procs if p.get("state") in STOPPED or p.get("state_code") in ("T", "t")]


def progressing(procs: List[Dict[str, Any]]) -> bool:
    """CPU moved, or a step started or ended inside the window."""
    if any(p.get("appeared") or p.get("exited") for p in procs):
        return True
    live = [p for p in procs if p.get("state") not in ("zombie", "gone")]
    return cpu_delta(live) >= PROGRESS_CPU_S


def safe_pgids(tree_pids: Iterable[int], groups: Dict[str, List[int]]) -> List[int]:
    """Process groups wholly inside the tree, so signalling them hits nothing else.

    ``groups`` maps a pgid (as a JSON string key) to every pid seen in it. A
    group shared with a live Python parent (ninja runs in its parent's group)
    is left out; its tree members must then be signalled by pid.
    """
    mine = set(tree_pids)
    out = []
    for key, members in groups.items():
        if members and set(members) <= mine:
            out.append(int(key))
    return sorted(out)


def fmt_rss(n: Optional[int]) -> str:
    if not n:
        return "0 MB"
    if n >= 1 << 30:
        return f"{n / (1 << 30):.1f} GB"
    return f"{n // (1 << 20)} MB"


# --- live, read-only helpers -------------------------------------------------

def read_wchan(pid: int) -> Optional[str]:
    """The kernel function a sleeping process waits in ("0" while running)."""
    return _text(pid, "wchan") or None


def scan_table() -> Dict[int, Tuple[str, int, int]]:
    """{pid: (comm, ppid, pgid)} for every process, straight from /proc/PID/stat.

    Several times cheaper than psutil.process_iter on a busy table (``procfs.read_stat_raw``:
    raw os.open/os.read, no buffered file object; only the first fields are split); the
    comm is what psutil's name() returns for names shorter than 15 characters (all compiler
    names).
    """
    out: Dict[int, Tuple[str, int, int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return out
    for e in entries:
        if not e.isdigit():
            continue
        raw = read_stat_raw(e)
        parts = split_stat(raw, 3) if raw is not None else None
        if parts is None:
            continue
        comm, rest = parts
        try:
            out[int(e)] = (comm, int(rest[1]), int(rest[2]))
        except (IndexError, ValueError):
            continue
    return out


def describe_live(pid: int) -> str:
    """``pid 123 `nvcc -c …` (state S, wchan hrtimer_nanosleep, cpu 0.1 s)`` for evidence."""
    import psutil

    try:
        p = psutil.Process(pid)
        with p.oneshot():
            cmd = " ".join(p.cmdline()) or p.name()
            st = p.status()
            t = p.cpu_times()
    except psutil.Error:
        return f"pid {pid} (gone)"
    if len(cmd) > 200:
        cmd = cmd[:200] + "…"
    return (f"pid {pid} `{cmd}` (state {st}, wchan {read_wchan(pid) or '-'}, "
            f"cpu {t.user + t.system:.1f} s)")


def tree_pids(root: int) -> List[int]:
    """``root`` and every live descendant, cheaply: ``/proc/PID/task/TID/children`` walks
    only the tree (a whole-table scan costs ~1 ms per 100 processes on a busy host); falls
    back to ``scan_table`` when the kernel lacks CONFIG_PROC_CHILDREN. [] if root is gone."""
    if not os.path.exists(f"/proc/{root}/task/{root}/children"):
        if not os.path.exists(f"/proc/{root}"):
            return []
        table = scan_table()
        kids: Dict[int, List[int]] = {}
        for pid, (_comm, ppid, _pgid) in table.items():
            kids.setdefault(ppid, []).append(pid)
        out, todo = [], [root]
        while todo:
            p = todo.pop()
            out.append(p)
            todo.extend(kids.get(p, []))
        return out
    out, todo, seen = [], [root], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        out.append(p)
        for t in tids:
            try:
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo.extend(int(x) for x in f.read().split())
            except (OSError, ValueError):
                continue
    return out


def read_comm(pid: int) -> Optional[str]:
    return _text(pid, "comm")


def _text(pid: int, name: str) -> Optional[str]:
    """``/proc/PID/<name>`` as stripped text, or None when it cannot be read."""
    raw = read_proc(pid, name, 4096)
    return None if raw is None else raw.decode("utf-8", "replace").strip()
