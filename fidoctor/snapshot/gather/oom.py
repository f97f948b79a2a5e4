"""Did the OOM killer (or a memory limit) kill compilers? The target's memory cgroup and the kernel log.

With ``--pid`` the cgroup is the server's (``/proc/PID/cgroup``): its builds
run in it. cgroup v2: ``memory.events`` (``oom``, ``oom_kill``, ``max``),
``memory.max``, ``memory.peak``. cgroup v1: ``memory.oom_control``
(``oom_kill``, ``under_oom``), ``memory.failcnt``, ``memory.limit_in_bytes``,
``memory.max_usage_in_bytes``. Without ``--pid`` fidoctor's own cgroup is
read and marked as such (it says little about a server started elsewhere).

The kernel log (``/dev/kmsg``, read non-blocking; needs root or CAP_SYSLOG,
often denied in containers) is filtered to OOM lines naming a compiler
(cicc, cc1plus, ptxas, cudafe++, nvcc, …), with their memcg and wall time.

Thrashing (build-memory-thrash) needs counters that climb, so when usage is
within 10 % of a set limit the cgroup is read twice, ``SAMPLE_S`` apart (the
window runs while the kernel log is read): v1 ``memory.failcnt``, v2
``memory.events`` ``max``, ``oom_kill``, and memory.stat's ``pgmajfault`` and
``workingset_refault_file``. v2 ``memory.pressure`` (PSI avg10/avg60) is read
where the kernel keeps it; v1 has no per-cgroup PSI. Counters come from
fidoctor.memcg, the one reader.

Data contract (``data``; never renamed; see fidoctor/snapshot/types.py OomFacts):
  cgroup: {source, version (1|2|None), path, dir, events: {oom, oom_kill, max} (counts
           this cgroup and its descendants), events_local (v2: this cgroup only),
           failcnt, limit, peak, error,
           added: usage (v1 memory.usage_in_bytes, v2 memory.current), stat: {anon, file,
           pgmajfault, refault_file}, pressure (v2 only: {some_avg10, full_avg10,
           some_avg60, full_avg60}), sample (only near the limit: {window_s, usage_end,
           failcnt, max, oom_kill, pgmajfault, refault_file}: growth over the window, None
           where this cgroup version keeps no such counter)}
  kernel: {status: ok|denied|absent|error, error, kills: [{time, pid, task, memcg,
           task_memcg, line}], scanned}
"""

from __future__ import annotations

import os
import re
import time
from typing import Any, Dict, List, Optional

from fidoctor import memcg
from fidoctor.mounts import read_mountinfo

NAME = "oom"
BUDGET_S = 3.0
ORDER = 8
KMSG_BUDGET_S = 1.0
KMSG_MAX_RECORDS = 200_000
COMPILERS = ("cicc", "cc1plus", "cc1", "ptxas", "cudafe++", "nvcc", "ninja", "fatbinary",
             "nvlink", "ld", "collect2", "as", "gcc", "g++", "c++", "nvdisasm")
_KILLED = re.compile(r"(?:Memory cgroup out of memory|Out of memory)[^:]*: Killed process "
                     r"(?P<pid>\d+) \((?P<task>[^)]+)\)")
SAMPLE_S = 0.5
NEAR_LIMIT = 0.9


def cgroup_facts(pid: Optional[int]) -> Dict[str, Any]:
    src = f"/proc/{pid}/cgroup" if pid else "/proc/self/cgroup"
    out: Dict[str, Any] = {"source": src if pid else f"{src} (fidoctor's own: no --pid)",
                           "version": None}
    text = memcg.read_text(src)
    if text is None:
        out["error"] = f"cannot read {src}"
        return out
    v1, v2 = memcg.paths_of(text)
    mounts, _ = read_mountinfo(pid)
    for version, path in ((2, v2), (1, v1)):
        if path is None:
            continue
        d = memcg.cgroup_dir(mounts, version, path)
        if d is None:
            continue
        if version == 2 and not os.path.exists(os.path.join(d, "memory.events")):
            continue  # v2 without the memory controller (as here): try v1
        out.update(version=version, path=path, dir=d)
        if version == 2:
            out["events"] = memcg.kv(memcg.read_text(os.path.join(d, "memory.events")))
            local = memcg.read_text(os.path.join(d, "memory.events.local"))
            if local is not None:
                out["events_local"] = memcg.kv(local)
            out["peak"] = memcg.read_int(memcg.read_text(os.path.join(d, "memory.peak")))
            psi = memcg.pressure(d)
            if psi is not None:
                out["pressure"] = psi
        else:
            oc = memcg.kv(memcg.read_text(os.path.join(d, "memory.oom_control")))
            out["events"] = {"oom_kill": oc.get("oom_kill", 0), "under_oom": oc.get("under_oom", 0)}
            out["peak"] = memcg.read_int(
                memcg.read_text(os.path.join(d, "memory.max_usage_in_bytes")))
        now = memcg.counters(d, version)
        out.update(limit=now["limit"], usage=now["usage"], stat=now["stat"])
        if version == 1:
            out["failcnt"] = now["failcnt"]
        return out
    out["error"] = "no memory controller found for this process (neither v2 nor v1)"
    return out


def kernel_kills(budget_s: float = KMSG_BUDGET_S) -> Dict[str, Any]:
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return {"status": "absent", "kills": []}
    except PermissionError as e:
        return {"status": "denied", "error": e.strerror, "kills": []}
    except OSError as e:
        return {"status": "error", "error": e.strerror or str(e), "kills": []}
    boot = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
    kills: List[Dict[str, Any]] = []
    pending: Dict[str, Dict[str, Any]] = {}
    n = 0
    deadline = time.monotonic() + budget_s
    try:
        while n < KMSG_MAX_RECORDS and time.monotonic() < deadline:
            try:
                rec = os.read(fd, 8192)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == 32:  # EPIPE: records overwritten while reading; carry on
                    continue
                return {"status": "error", "error": e.strerror, "kills": kills, "scanned": n}
            if not rec:
                break
            n += 1
            head, _, msg = rec.decode("utf-8", "replace").partition(";")
            msg = msg.split("\n", 1)[0]
            if "oom" not in msg.lower() and "Killed process" not in msg:
                continue
            try:
                usec = int(head.split(",")[2])
            except (IndexError, ValueError):
                usec = 0
            if "oom-kill:" in msg:  # constraint=…,oom_memcg=/a,task_memcg=/a/b,task=cicc,pid=N,uid=0
                kv = dict(p.split("=", 1) for p in msg.split("oom-kill:", 1)[1].split(",")
                          if "=" in p)
                if kv.get("pid"):
                    pending[kv["pid"]] = {"memcg": kv.get("oom_memcg"),
                                          "task_memcg": kv.get("task_memcg")}
                continue
            k = _KILLED.search(msg)
            if k and k.group("task") in COMPILERS:
                kills.append(dict({"time": round(boot + usec / 1e6, 3), "pid": int(k.group("pid")),
                                   "task": k.group("task"), "line": msg.strip()[:300]},
                                  **pending.pop(k.group("pid"), {})))
    finally:
        os.close(fd)
    return {"status": "ok", "kills": kills[-50:], "scanned": n}


def near_limit(cg: Dict[str, Any]) -> bool:
    """Usage within NEAR_LIMIT of a set limit: the only case worth a second reading."""
    lim, use = cg.get("limit"), cg.get("usage")
    return bool(lim and use is not None and use >= NEAR_LIMIT * lim)


def gather(ctx, done) -> Dict[str, Any]:
    cg = cgroup_facts(ctx.pid)
    first = memcg.counters(cg["dir"], cg["version"]) if near_limit(cg) else None
    kern = kernel_kills()  # the window runs while the kernel log is read
    if first is not None:
        left = SAMPLE_S - (time.monotonic() - first["t"])
        if left > 0:
            time.sleep(left)
        cg["sample"] = memcg.delta(first, memcg.counters(cg["dir"], cg["version"]))
    return {"cgroup": cg, "kernel": kern}
