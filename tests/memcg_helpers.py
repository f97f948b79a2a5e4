"""A real memory cgroup for a test, a real "server" that builds inside it, and the toolchain's
page cache evicted so the compilers' code is charged to that cgroup.

Shared by test_build_killed.py (the kernel OOM-kills a compiler), test_build_memory_thrash.py
and test_live_thrash.py (the kernel reclaims and refaults the compilers' code).
Which of the two a 200 MB limit produces depends on where the toolchain's code pages are
charged: page cache is charged to the cgroup that first reads it. Paged in *outside* the
cgroup (``warm``), only the compilers' data counts and the kernel kills within seconds;
evicted first (``evict_toolchain``: posix_fadvise DONTNEED on the compiler binaries and
their libraries, never a global drop_caches), the code is read back inside the cgroup,
charged to it, and reclaiming it always "succeeds", so nothing is killed.

The fixture ``memcg`` (tests/conftest.py) is ``memcg_dir``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest
from ninja_helpers import fi_env, flashinfer_module, venv_ninja

CUDA_HOME = "/usr/local/cuda"
LIMIT = "200M"

SERVER = r"""
import os, subprocess, sys, tempfile, time
memcg, ninja, mode, mod, cuda_home = sys.argv[1:6]
if mode == "build":
    # Page the toolchain in (nvcc, cudafe++, cicc, ptxas, cc1plus, as, ld) before joining the
    # cgroup: page cache is charged to the cgroup that first reads it, and with the compilers'
    # own code charged to a 200 MB cgroup the kernel reclaims and refaults it forever instead
    # of OOM-killing (failcnt climbs, oom_kill stays 0: seen after `drop_caches`).
    with tempfile.TemporaryDirectory() as t:
        with open(os.path.join(t, "w.cu"), "w") as f:
            f.write("__global__ void k(float *x) { x[0] = 1; }\n")
        subprocess.run([os.path.join(cuda_home, "bin", "nvcc"), "-c", "w.cu", "-o", "w.o",
                        "-gencode=arch=compute_90a,code=sm_90a"], cwd=t, capture_output=True,
                       timeout=240)
with open(os.path.join(memcg, "cgroup.procs"), "w") as f:
    f.write(str(os.getpid()))
if mode in ("build", "cold"):
    print("building", flush=True)
    # "cold": one job at a time, its code read inside the cgroup (see evict_toolchain)
    argv = [ninja, "-C", mod] + (["-j1"] if mode == "cold" else [])
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=240)
        print("ended", r.returncode, r.stdout[-300:].replace("\n", " "), flush=True)
    except subprocess.TimeoutExpired:
        print("ended timeout: no OOM kill in 240 s", flush=True)
else:
    print("ended idle", flush=True)
time.sleep(600)
"""


def own_memcg() -> Path:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        hid, ctrl, path = line.split(":", 2)
        if hid == "0" and Path("/sys/fs/cgroup", path.lstrip("/"), "memory.max").exists():
            return Path("/sys/fs/cgroup", path.lstrip("/"))
        if "memory" in ctrl.split(","):
            d = Path("/sys/fs/cgroup/memory", path.lstrip("/"))
            if d.is_dir():
                return d
    pytest.skip("no memory cgroup controller (v1 or v2) on this machine")


def limit_file(d: Path) -> Optional[Path]:
    return next((d / n for n in ("memory.max", "memory.limit_in_bytes") if (d / n).exists()),
                None)


def memcg_dir(procs) -> Iterator[Path]:
    """The ``memcg`` fixture (tests/conftest.py): a child memory cgroup of the test's own,
    limited to 200 MB; removed at the end after every process the test started is killed."""
    d = own_memcg() / f"fidoctor-test-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    limit = limit_file(d)
    if limit is None:
        d.rmdir()
        pytest.skip(f"the memory controller is not delegated to {d.parent} (cgroup v2 "
                    "subtree_control), so no child memory limit can be set")
    limit.write_text(LIMIT)
    try:
        yield d
    finally:
        procs.kill_all()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                d.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def start_server(procs, memcg: Path, env: Dict[str, str], mode: str, mod: Path):
    """The "server": joins ``memcg``, then (mode ``build``: toolchain paged in first; ``cold``:
    ``-j1``, nothing paged in; ``idle``) runs ninja on ``mod`` as FlashInfer's run_ninja does.
    Prints ``building`` when it starts ninja and ``ended …`` when ninja ends."""
    return procs.start([sys.executable, "-c", SERVER, str(memcg), venv_ninja(), mode, str(mod),
                        CUDA_HOME], env=env, stdout=subprocess.PIPE)


def cold_build(tmp_path: Path, procs, memcg: Path):
    """A real 0.7.2.post1 decode module written for the real nvcc, the toolchain evicted
    (``evict_toolchain``), and a ``cold`` server building it in ``memcg``, past its
    ``building`` line: (server, module dir, its env, what stayed resident)."""
    base = tmp_path / "b"
    mod = flashinfer_module(base, build=False, launch=False)
    env = fi_env(base, CUDA_HOME)
    left = evict_toolchain()
    p = start_server(procs, memcg, env, "cold", mod)
    assert p.stdout.readline().decode().startswith("building")
    return p, mod, env, left


def server_ended(procs, memcg: Path, env: Dict[str, str], mode: str, mod: Path):
    """``start_server``, then its first ``ended`` line (the build's outcome)."""
    p = start_server(procs, memcg, env, mode, mod)
    line = p.stdout.readline().decode()
    if line.startswith("building"):
        line = p.stdout.readline().decode()
    assert line.startswith("ended"), line
    return p, line


def toolchain_files(cuda_home: str = CUDA_HOME) -> List[str]:
    """The compilers a FlashInfer build runs and the shared libraries they load (ldd)."""
    bins = [os.path.join(cuda_home, *p) for p in (("bin", "nvcc"), ("bin", "cudafe++"),
                                                  ("bin", "ptxas"), ("bin", "fatbinary"),
                                                  ("bin", "nvlink"), ("nvvm", "bin", "cicc"))]
    for prog in ("cc1plus", "as", "ld", "collect2"):
        r = subprocess.run(["c++", f"-print-prog-name={prog}"], capture_output=True, text=True,
                           timeout=10)
        path = r.stdout.strip()
        if not os.path.isabs(path):
            path = subprocess.run(["sh", "-c", f"command -v {path}"], capture_output=True,
                                  text=True, timeout=10).stdout.strip()
        bins.append(path)
    bins = [os.path.realpath(b) for b in bins if b and os.path.isfile(b)]
    libs = set()
    for b in bins:
        r = subprocess.run(["ldd", b], capture_output=True, text=True, timeout=10)
        libs |= {os.path.realpath(m) for m in re.findall(r"=> (/\S+)", r.stdout)}
    return sorted(set(bins) | libs)


BIG = ("cudafe++", "cicc", "cc1plus")  # the compilers whose code a 200 MB build refaults


def resident(files: List[str]) -> Dict[str, int]:
    """Bytes of each file in the page cache (util-linux ``fincore``); {} where it is missing."""
    try:
        r = subprocess.run(["fincore", "-b", "-n", "-o", "RES,FILE", *files],
                           capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    out = {}
    for line in r.stdout.splitlines():
        size, _, name = line.strip().partition(" ")
        if size.isdigit():
            out[name.strip()] = int(size)
    return out


def evict_toolchain(cuda_home: str = CUDA_HOME, budget_s: float = 30.0) -> Dict[str, int]:
    """posix_fadvise(DONTNEED) on every toolchain file, so their pages leave the page cache.

    Pages a running process maps stay (another build on this machine running cudafe++):
    retried once a second for ``budget_s`` until cudafe++, cicc and cc1plus are out.
    Returns what is still resident of those three (bytes; empty when all are out)."""
    files = toolchain_files(cuda_home)
    big = [f for f in files if os.path.basename(f) in BIG]
    deadline = time.monotonic() + budget_s
    while True:
        for f in files:
            fd = os.open(f, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
        left = {os.path.basename(f): n for f, n in resident(big).items() if n}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(1.0)


def counters(d: Path) -> Dict[str, int]:
    """limit hits (v1 failcnt / v2 events max), oom_kill, usage and limit of cgroup dir ``d``."""
    from fidoctor.memcg import counters as read

    c = read(str(d), 2 if (d / "memory.max").exists() else 1)
    return {"hits": (c.get("failcnt") if c.get("failcnt") is not None else c.get("max")) or 0,
            "oom_kill": c.get("oom_kill") or 0, "usage": c.get("usage") or 0,
            "limit": c.get("limit") or 0}


def wait_for_thrash(memcg: Path, server, budget_s: float = 90.0, hits_per_s: float = 5000.0,
                    left: Optional[Dict[str, int]] = None) -> Dict[str, float]:
    """Block until the cgroup thrashes for 2 s in a row (at its limit, the limit hit
    ``hits_per_s`` a second, no OOM kill), or skip the test saying why it did not.
    ``left``: what ``evict_toolchain`` could not evict (named in the reason)."""
    why = (f"; still in the page cache when the build started (mapped by another process): "
           f"{left}" if left else "")
    deadline = time.monotonic() + budget_s
    prev, streak = counters(memcg), 0
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = counters(memcg)
        if now["oom_kill"]:
            pytest.skip("the kernel OOM-killed the compiler before a sustained thrash (it "
                        "thrashes only while enough of the compilers' code is charged to the "
                        "cgroup and their data leaves reclaim something to take)" + why)
        if server.poll() is not None:
            pytest.skip("the server exited before its build thrashed" + why)
        rate = now["hits"] - prev["hits"]
        at_limit = now["limit"] and now["usage"] >= 0.95 * now["limit"]
        streak = streak + 1 if at_limit and rate >= hits_per_s else 0
        prev = now
        if streak >= 2:
            return {"hits_per_s": rate, "usage": now["usage"]}
    pytest.skip(f"no thrash within {budget_s:.0f} s (the limit was not hit {hits_per_s:.0f} "
                "times a second with the cgroup at its limit)" + why)
