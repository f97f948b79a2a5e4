"""JIT locks of every FlashInfer version: who holds them, who waits, who has them open.

Lock files (listed by the ``cache`` section):

* ``cached_ops/tmp/<name>.lock`` (0.2.6+) and ``cached_ops/<name>.lock``
  (≤0.2.5): filelock's ``fcntl.flock``. The kernel drops the lock when the
  holder dies, so the file staying behind means nothing; only a ``/proc/locks``
  entry on its device+inode does.
* ``cached_ops/<name>/lock`` (≤0.2.5): torch's FileBaton, an O_EXCL file the
  holder keeps open. Nobody has it open → stale; every later build spins. That
  later build first takes the module's flock (FlashInfer wraps torch's load in
  it), so a holder of the flock of a module whose baton is stale is a waiter of
  the baton (and every other process of that module waits on the flock).

``/proc/locks`` prints the device as ``MAJOR:MINOR`` in hex (``fe:00:2686989``)
while ``st_dev`` is one integer; they are matched through ``os.major/minor``.
Blocked ``->`` lines are waiters in the kernel, but filelock never blocks:
it polls ``flock(LOCK_EX|LOCK_NB)``, closes, sleeps 50 ms, so its waiters
never show up there, and FileBaton waiters only ``stat()`` every 100 ms.
They are found by how they behave, and the confidence says how sure:

* ``seen``: caught with the lock file open (sampling ``/proc/PID/fd`` during
  the window) while another pid holds it;
* ``likely``: a Python process of the same cache (its environ points there,
  or it has a file under it open, e.g. ``flashinfer_jit.log``), no compiler
  children, parked in a sleep wchan in most of the looks taken every 5 ms
  over the window, and waking several times a second;
* ``possible``: same cache and parked in a sleep, but not seen waking.

Data: ``locks`` (path, style flock|flock-toplevel|baton, module, module_dir,
ino, dev, dev_hex, holders, blocked, open_by, waiters [{pid, confidence,
reasons}], match), ``procs`` {pid: what each holder/waiter is doing},
``proc_locks_ok``, ``fd_scan`` {processes, denied}, ``sample_window_s``.
"""

from __future__ import annotations

import os
import re
import stat
import time
from typing import Any, Dict, List, Optional, Set, Tuple

import psutil

from fidoctor import selfprocs
from fidoctor.flashinfer.builds import COMPILERS
from fidoctor.procfs import parse_environ, read_proc
from fidoctor.proclocks import entries_for, read_proc_locks
from fidoctor.proctree import (
    SLEEP_WCHANS,
    STATE_LETTER,
    is_orphaned,
    is_python_exe,
    read_wchan,
    scan_table,
)

NAME = "locks"
BUDGET_S = 6.0
ORDER = 5
REQUIRES = ("cache",)
MAX_WINDOW_S = 2.0
FD_SAMPLE_EVERY_S = 0.005
MAX_CANDIDATES = 64
# A poll loop (filelock 50 ms, FileBaton 100 ms) wakes 10–20 times a second.
POLL_WAKEUPS_PER_S = 4.0


def _lock_files(cache: Dict[str, Any]) -> List[Dict[str, Any]]:
    locks = []
    for ws in cache.get("workspaces", []):
        ops = os.path.join(ws["path"], "cached_ops")
        for lk in ws.get("locks", []):
            locks.append({"path": lk["path"], "style": lk.get("style", "flock"),
                          "module": lk.get("module"), "workspace": ws["path"],
                          "module_dir": os.path.join(ops, lk.get("module") or ""),
                          "ino": lk.get("ino"), "dev": lk.get("dev"), "mtime": lk.get("mtime")})
        for mod in ws.get("modules", []):
            b = mod.get("baton")
            if b:
                locks.append({"path": b["path"], "style": "baton", "module": mod["name"],
                              "workspace": ws["path"], "module_dir": mod["path"],
                              "ino": b.get("ino"), "dev": b.get("dev"), "mtime": b.get("mtime")})
    return locks


MAX_EXT_LOCKS = 200


def torch_extensions_root(env: Dict[str, str]) -> Optional[str]:
    """Where torch.utils.cpp_extension.load builds: ``$TORCH_EXTENSIONS_DIR``, else
    ``<XDG_CACHE_HOME or ~/.cache>/torch_extensions`` (torch's _get_build_directory)."""
    if env.get("TORCH_EXTENSIONS_DIR"):
        return env["TORCH_EXTENSIONS_DIR"]
    cache = env.get("XDG_CACHE_HOME") or (os.path.join(env["HOME"], ".cache")
                                          if env.get("HOME") else None)
    return os.path.join(cache, "torch_extensions") if cache else None


def _extension_locks(env: Dict[str, str]) -> List[Dict[str, Any]]:
    """torch FileBatons (``<root>[/py311_cu124]/<ext>/lock``) of extensions built at import
    by FlashInfer's dependencies (tvm-ffi's c_dlpack in 0.4.x) or by cpp_extension.load."""
    root = torch_extensions_root(env)
    out: List[Dict[str, Any]] = []
    if not root or not os.path.isdir(root):
        return out
    dirs = []
    try:
        for a in sorted(os.listdir(root))[:MAX_EXT_LOCKS]:
            pa = os.path.join(root, a)
            dirs.append(pa)
            if os.path.isdir(pa) and not os.path.islink(pa) and re.match(r"py\d+_", a):
                dirs += [os.path.join(pa, b) for b in sorted(os.listdir(pa))[:MAX_EXT_LOCKS]]
    except OSError:
        return out
    for d in dirs:
        lock = os.path.join(d, "lock")
        try:
            st = os.lstat(lock)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        name = os.path.basename(d)
        out.append({"path": lock, "style": "baton", "module": name, "extension": name,
                    "workspace": root, "module_dir": d, "ino": st.st_ino, "dev": st.st_dev,
                    "mtime": st.st_mtime})
        if len(out) >= MAX_EXT_LOCKS:
            break
    return out


def _fd_targets(pid: int) -> Optional[List[str]]:
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    out = []
    for n in names:
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{n}"))
        except OSError:
            continue
    return out


def _environ_roots(pid: int) -> List[str]:
    """The FlashInfer cache root and the torch extensions root this process would use."""
    raw = read_proc(pid, "environ", -1)
    if raw is None:
        return []
    env = parse_environ(raw)
    out = []
    from fidoctor.flashinfer.layout import process_cache_root

    out.append(process_cache_root(pid, env))
    ext = torch_extensions_root(env)
    if ext:
        out.append(ext)
    return out


_KIDS: Dict[int, Any] = {}


def _children_map(all_procs: Dict[int, Tuple[str, int, int]]) -> Dict[int, List[int]]:
    """{ppid: [pids]} for one table (memoised on the table's identity)."""
    key = id(all_procs)
    if key not in _KIDS:
        _KIDS.clear()
        m: Dict[int, List[int]] = {}
        for pid, row in all_procs.items():
            m.setdefault(row[1], []).append(pid)
        _KIDS[key] = (all_procs, m)
    return _KIDS[key][1]


def _describe(pid: int, all_procs: Dict[int, Tuple[str, int, int]]) -> Dict[str, Any]:
    d: Dict[str, Any] = {"pid": pid}
    try:
        p = psutil.Process(pid)
        with p.oneshot():
            d["name"] = p.name()
            d["ppid"] = p.ppid()
            d["state"] = p.status()
            d["create_time"] = p.create_time()
            d["argv"] = " ".join(p.cmdline())[:500]
            ct = p.cpu_times()
            d["cpu_s"] = round(ct.user + ct.system, 3)
            d["vol_ctx"] = p.num_ctx_switches().voluntary
            d["rss"] = p.memory_info().rss
        d["exe"] = p.exe()
    except psutil.AccessDenied:
        d["denied"] = True
    except psutil.Error:
        d["state"] = "gone"
        return d
    d["state_code"] = STATE_LETTER.get(d.get("state") or "")
    d["wchan"] = read_wchan(pid)
    try:
        d["sid"] = os.getsid(pid)
        d["pgid"] = os.getpgid(pid)
    except OSError:
        pass
    children = _children_map(all_procs)
    kids = children.get(pid, [])
    todo: List[int] = list(kids)
    desc: List[int] = []
    while todo and len(desc) < 200:
        c = todo.pop()
        desc.append(c)
        todo.extend(children.get(c, []))
    d["children"] = [{"pid": c, "name": all_procs[c][0]} for c in sorted(kids)]
    d["compiler_descendants"] = sorted(c for c in desc if all_procs[c][0] in COMPILERS)
    ppid = d.get("ppid") or 0
    d["parent_exists"] = ppid in all_procs
    if d["parent_exists"]:
        d["parent_name"] = all_procs[ppid][0]
        try:
            d["parent_sid"] = os.getsid(ppid)
            d["parent_is_python"] = is_python_exe(psutil.Process(ppid).exe(), all_procs[ppid][0])
        except (OSError, psutil.Error):
            d["parent_is_python"] = is_python_exe(None, all_procs[ppid][0])
    d["orphaned"] = is_orphaned(d)
    return d


def _resample(d: Dict[str, Any], window: float) -> None:
    try:
        p = psutil.Process(d["pid"])
        with p.oneshot():
            ct = p.cpu_times()
            vol = p.num_ctx_switches().voluntary
            d["state"] = p.status()
    except psutil.Error:
        d["exited"] = True
        return
    d["cpu_delta_s"] = round(max(0.0, ct.user + ct.system - d.get("cpu_s", 0.0)), 3)
    if d.get("vol_ctx") is not None:
        d["vol_ctx_delta"] = vol - d.pop("vol_ctx")
        d["wakeups_per_s"] = round(d["vol_ctx_delta"] / window, 1) if window else None
    d["state_code"] = STATE_LETTER.get(d["state"])
    d["wchan"] = read_wchan(d["pid"]) or d.get("wchan")


def _candidates(all_procs, roots: Set[str], exclude: Set[int]) -> Dict[int, List[str]]:
    """Python processes that belong to this cache (and why we think so)."""
    out: Dict[int, List[str]] = {}
    me = os.getpid()
    for pid, row in all_procs.items():
        name = row[0]
        if pid in exclude or pid == me or len(out) >= MAX_CANDIDATES:
            continue
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            exe = None
        if not is_python_exe(exe, name):
            continue
        why = []
        if any(os.path.realpath(r) in roots for r in _environ_roots(pid)):
            why.append("its environment points at this cache")
        fds = _fd_targets(pid) or []
        hit = next((t for t in fds if any(t.startswith(x + "/") for x in roots)), None)
        if hit:
            why.append(f"has {hit} open")
        if why:
            out[pid] = why
    return out


def _idle_count(cache: Dict[str, Any], ext: List[Dict[str, Any]],
                entries: List[Dict[str, Any]]) -> Optional[int]:
    """How many lock files there are when none can be in use — no FileBaton anywhere and
    no ``/proc/locks`` entry on any of their inodes (a superset of what the full match
    below finds) — else None. Counted without building a dict per file."""
    if ext:  # torch extension batons: judged by who has them open
        return None
    inos = {e["ino"] for e in entries}
    n = 0
    for ws in cache.get("workspaces", []):
        for lk in ws.get("locks", []):
            if lk.get("ino") in inos:
                return None
        n += len(ws.get("locks", []))
        if any("baton" in m for m in ws.get("modules", [])):
            return None
    return n


def _realpaths(paths: List[str]) -> List[str]:
    """``os.path.realpath`` of each path, resolving each parent directory once.

    realpath(dir/name) is realpath(dir)/name unless name is itself a symlink; 10,000 lock
    files share one cached_ops/tmp, and realpath walked its ten components for each of them
    (140,000 lstat calls, 1.5 s) while one held lock kept the gather on this path."""
    dirs: Dict[str, str] = {}
    out = []
    for p in paths:
        d, name = os.path.split(p)
        rd = dirs.get(d)
        if rd is None:
            rd = dirs[d] = os.path.realpath(d)
        rp = os.path.join(rd, name)
        out.append(os.path.realpath(rp) if name in ("", ".", "..") or os.path.islink(rp)
                   else rp)
    return out


def gather(ctx, done) -> Dict[str, Any]:
    cache = done["cache"].data if "cache" in done and done["cache"].ok else {}
    ext = _extension_locks(dict(getattr(ctx, "env", None) or {}))
    entries, err = read_proc_locks()
    idle = _idle_count(cache, ext, entries)  # any level: 10,000 idle files are just counted
    locks = [] if idle else _lock_files(cache) + ext
    out: Dict[str, Any] = {"locks": locks, "procs": {}, "sample_window_s": 0.0}
    out["proc_locks_ok"] = err is None
    if err is not None:
        out["proc_locks_error"] = err
    if idle:  # 10,000 idle lock files are megabytes no probe reads: a count
        out["own_pids"] = sorted(selfprocs.own_pids(scan_table()))
        out["idle_lock_files"] = idle
        return out
    if not locks:
        return out
    real: Dict[str, Dict[str, Any]] = {}
    table0: Dict[int, Tuple[str, int, int]] = scan_table()
    own = selfprocs.own_pids(table0)  # never fidoctor's own gatherers/children (issue 18)
    out["own_pids"] = sorted(own)
    by_ino: Dict[Any, List[Dict[str, Any]]] = {}
    for e in entries:
        by_ino.setdefault(e["ino"], []).append(e)
    hexes: Dict[Any, Optional[str]] = {None: None}
    for lk in locks:
        dev = lk.get("dev")
        if dev is not None and dev not in hexes:
            hexes[dev] = f"{os.major(dev):02x}:{os.minor(dev):02x}"
        lk["dev_hex"] = hexes[dev]
        lk["open_by"], lk["waiters"] = [], []
        same = by_ino.get(lk.get("ino"))
        if not same:  # the usual case, 10,000 times over: nobody has it locked
            lk["match"], lk["holders"], lk["blocked"] = None, [], []
            continue
        # overlayfs and some FUSE report another device than stat(): fidoctor.proclocks.
        hits, lk["match"] = entries_for(same, dev, lk.get("ino"))
        hits = [e for e in hits if e["pid"] not in own]
        lk["holders"] = sorted({e["pid"] for e in hits if not e["blocked"]})
        lk["blocked"] = sorted({e["pid"] for e in hits if e["blocked"]})
    if not any(lk["holders"] or lk["blocked"] or lk["style"] == "baton" for lk in locks):
        # Only unheld flock files (or only fidoctor's own pids on them), the normal leftovers:
        # nothing to look for, and nothing a probe reads. Counted, not listed, at any level:
        # a 10,000-module box's list was 10 MB of every snapshot (the cache section keeps
        # each file's path, inode and mtime).
        out["locks"], out["idle_lock_files"] = [], len(locks)
        return out
    for lk in locks:  # quick scans skip each file's lstat: the few held ones get their age
        if lk.get("mtime") is None and (lk["holders"] or lk["blocked"]):
            try:
                lk["mtime"] = os.lstat(lk["path"]).st_mtime
            except OSError:
                pass
    for lk, rp in zip(locks, _realpaths([lk["path"] for lk in locks])):
        real[rp] = lk  # what /proc/PID/fd shows for it
        real[lk["path"]] = lk
    all_procs: Dict[int, Tuple[str, int, int]] = scan_table()
    own |= selfprocs.own_pids(all_procs)
    out["own_pids"] = sorted(own)
    scanned = denied = 0
    for pid in all_procs:
        if pid in own:
            continue
        targets = _fd_targets(pid)
        if targets is None:
            denied += 1
            continue
        scanned += 1
        for t in targets:
            held = real.get(t)
            if held is not None and pid not in held["open_by"]:
                held["open_by"].append(pid)
    out["fd_scan"] = {"processes": scanned, "denied": denied}
    seen_at_scan: Dict[int, Set[str]] = {}
    live = [lk for lk in locks if lk["holders"] or lk["blocked"] or lk["open_by"]
            or lk["style"] == "baton"]
    if not live:
        return out  # only harmless leftover flock files: nothing to watch
    involved: Set[int] = set()
    holders: Set[int] = set()
    for lk in live:
        involved.update(lk["holders"], lk["blocked"], lk["open_by"])
        holders.update(lk["open_by"] if lk["style"] == "baton" else lk["holders"])
    # FlashInfer 0.2.0-0.2.5 holds its flock (cached_ops/<name>.lock) around torch's load,
    # which then waits on torch's baton (cached_ops/<name>/lock): a holder of a module's flock
    # whose baton nobody has open is that baton's waiter (a restart after a killed build).
    stale_batons = {os.path.normpath(lk["module_dir"]) for lk in live
                    if lk["style"] == "baton" and not lk["open_by"] and not lk.get("extension")}
    baton_waiting = {pid: os.path.normpath(lk["module_dir"]) for lk in live
                     if lk["style"] != "baton"
                     and os.path.normpath(lk["module_dir"]) in stale_batons
                     for pid in lk["holders"]}
    for lk in live:  # a flock poller caught mid-round by the fd scan
        for pid in lk["open_by"]:
            if lk["style"] != "baton" and pid not in holders:
                seen_at_scan.setdefault(pid, set()).add(lk["path"])
    roots = {os.path.realpath(ctx.flashinfer_root)}
    roots |= {os.path.realpath(lk["workspace"]) for lk in live if lk.get("extension")}
    cands = _candidates(all_procs, roots, (holders - set(baton_waiting)) | own
                        | {p for lk in live for p in lk["blocked"]})
    procs = {pid: _describe(pid, all_procs) for pid in involved | set(cands)}
    seen: Dict[int, Set[str]] = {k: set(v) for k, v in seen_at_scan.items()}
    window = max(0.0, min(float(getattr(ctx, "sample_window_s", 0.5) or 0.0), MAX_WINDOW_S))
    t0 = time.monotonic()
    naps: Dict[int, List[Any]] = {pid: [0, 0, None] for pid in cands}  # asleep, looks, wchan
    while True:
        for pid in cands:
            for t in _fd_targets(pid) or []:
                held = real.get(t)
                if held is not None:
                    seen.setdefault(pid, set()).add(held["path"])
            w = read_wchan(pid) or ""
            if any(x in w for x in SLEEP_WCHANS):
                naps[pid][0] += 1
                naps[pid][2] = w
            naps[pid][1] += 1
        if time.monotonic() - t0 >= window:
            break
        time.sleep(FD_SAMPLE_EVERY_S)
    elapsed = round(time.monotonic() - t0, 3)
    out["sample_window_s"] = elapsed
    for d in procs.values():
        _resample(d, elapsed)
    for lk in live:
        for pid in lk["blocked"]:
            lk["waiters"].append({"pid": pid, "confidence": "seen",
                                  "reasons": ["blocked on it in /proc/locks"]})
    for pid, why in sorted(cands.items()):
        d = procs[pid]
        if d.get("compiler_descendants") or d.get("exited"):
            continue  # a builder, not a waiter
        slept, samples, nap = naps.get(pid, [0, 0, None])
        # Parked in a sleep most of the window (one look could catch it awake).
        asleep = samples > 0 and slept * 2 >= samples
        d["asleep_samples"] = [slept, samples]
        d["sleep_wchan"] = nap
        polling = (d.get("wakeups_per_s") or 0) >= POLL_WAKEUPS_PER_S
        # A lock it holds is not one it polls (a 0.2.x restart has its module's flock open).
        caught = seen.get(pid, set()) - {lk["path"] for lk in live if pid in lk["holders"]}
        for lk in live:
            if pid in baton_waiting and (lk["style"] != "baton" or os.path.normpath(
                    lk["module_dir"]) != baton_waiting[pid]):
                continue  # it holds that module's flock: only its stale baton can stop it
            if caught and lk["path"] not in caught:
                continue  # it was seen polling another lock
            if lk["style"] != "baton" and not lk["holders"]:
                continue  # nobody holds it: a poller would have taken it
            reasons = list(why)
            if lk["path"] in caught:
                conf = "seen"
                reasons.append("caught with the lock file open while another pid holds it")
            elif asleep and polling:
                conf = "likely"
                reasons.append(f"asleep ({nap}) in {slept} of {samples} looks and "
                               f"wakes {d.get('wakeups_per_s')}/s (a poll loop)")
            elif asleep:
                conf = "possible"
                reasons.append(f"asleep ({nap}) in {slept} of {samples} looks")
            else:
                continue
            if len(live) > 1 and conf != "seen":
                reasons.append(f"one of {len(live)} live locks in this cache; which one is a guess")
            lk["waiters"].append({"pid": pid, "confidence": conf, "reasons": reasons})
    out["procs"] = {str(k): v for k, v in sorted(procs.items())}
    return out
