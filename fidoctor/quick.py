"""``diagnose --level quick``: the static facts a node health check can afford.

Why: Slurm kills a ``HealthCheckProgram`` after 60 s and runs it on every node
every few minutes; a Kubernetes startup probe runs every few seconds. So the
quick level reads files and ``/proc`` only: no target interpreter subprocess
(target, toolkit, host compiler, GPU queries), no ninja (rebuild), no CPU
sampling of processes, no build.ninja, no ELF parsing beyond each .so's
64-byte head (the cache gatherer's quick scan: ``ctx.extra["level"]``).
Sections: host, cache, fs, locks, jitlog, jit_build_log (fs does not wait
for the cache scan: INDEPENDENT); the whole gather is cut at GATHER_BUDGET_S so the
command ends within 5 s even when the cache sits on a stalled mount.

A cache or fs section that ran out of time on such a mount is not "not
checked": the node cannot read its own cache, which is what the health check
is for. It becomes a ``cache-unreadable`` error naming the stall. A cache that
answers but is too big to scan in the budget stays inconclusive (its probes
say "cache (timeout …)"), never a false alarm.
"""

from __future__ import annotations

from typing import List

from fidoctor.model import Finding, Fix

SECTIONS = ("host", "cache", "fs", "locks", "jitlog", "jit_build_log")
HARD_CAP_S = 5.0
GATHER_BUDGET_S = 4.0  # at most; less when the interpreter took long to start (gather_budget)
STALL_SECTIONS = ("cache", "fs", "jitlog")


def _probe_mount(ctx, done) -> dict:
    """stat, statvfs and one directory read of the cache root, then of every mount point
    below it (a module dir or cached_ops on its own, stalled, NFS/FUSE mount blocks the scan
    as surely as a stalled root); in a child: it may block."""
    import os
    import time

    from fidoctor.mounts import read_mountinfo

    root = ctx.flashinfer_root
    t0 = time.monotonic()
    p = root
    while not os.path.lexists(p) and p != "/":
        p = os.path.dirname(p)
    os.stat(p)
    os.statvfs(p)
    if os.path.isdir(p):
        with os.scandir(p) as it:
            next(it, None)
    below = os.path.realpath(p).rstrip("/") + "/"
    subs = sorted(m["mount_point"] for m in read_mountinfo(None)[0]
                  if m["mount_point"].startswith(below))
    for mp in subs:
        os.stat(mp)
        os.statvfs(mp)
        if os.path.isdir(mp):
            with os.scandir(mp) as it:
                next(it, None)
    return {"path": p, "mounts_below": subs, "seconds": round(time.monotonic() - t0, 4)}


MOUNT_GATHERER_BUDGET_S = 2.0
# Requirements dropped at this level: fs finds the workspaces itself (discover_workspaces)
# instead of waiting for the whole module scan; it then skips the per-module places.
INDEPENDENT = {"fs": ("cache",)}


def stalled(snap) -> List[Finding]:
    """``cache-unreadable`` for a cache root that did not answer; inconclusive for a big one.

    The ``cache_mount`` section (stat + statvfs + one readdir of the root) tells a stalled
    mount (it timed out too) from a cache that is merely too big to scan in the budget.
    """
    late = [(n, s) for n in STALL_SECTIONS for s in [snap.section(n)]
            if s is not None and s.status == "timeout"]
    probe = snap.section("cache_mount")
    if probe is None or probe.status != "timeout":
        return []
    root = str(snap.context.get("flashinfer_root") or "the FlashInfer cache")
    return [Finding(
        id="cache-unreadable", severity="error", subject=root,
        title=f"the FlashInfer cache did not answer within {MOUNT_GATHERER_BUDGET_S:g} s "
        "(stat/statvfs/readdir of its root and of the mounts below it): a stalled or dead "
        "mount",
        evidence=[f"cache_mount: {probe.error}"] + [f"{n}: {s.error}" for n, s in late] + [
            f"{root} is where FlashInfer builds and loads its kernels; a server here would "
            "block on it too"],
        fixes=[Fix(description="Check the mount holding the cache (df -h, mount, dmesg), or "
                   "point FLASHINFER_WORKSPACE_BASE at node-local disk",
                   commands=[f"timeout 5 stat {root}", f"findmnt -R {root}",
                             "dmesg | tail -n 30"])],
        data={"sections": ["cache_mount"] + [n for n, _ in late], "level": "quick"})]


def add_stalled(diag) -> None:
    """Add ``stalled`` findings to a quick diagnosis, in diagnose's order."""
    from fidoctor.model import sort_key

    found = stalled(diag.snapshot)
    if found:
        diag.findings = sorted(diag.findings + found, key=sort_key)
        return
    cache = diag.snapshot.section("cache")
    if cache is not None and not cache.ok:
        diag.not_checked = (f"the cache scan did not finish at --level quick (cache: {cache.status}"
                            f"{': ' + cache.error if cache.error else ''}); run diagnose "
                            "without --level quick")


def gatherers() -> list:
    """Only the quick sections' gatherers, imported alone (the others' imports cost time)."""
    import importlib

    from fidoctor.snapshot.gather import Gatherer

    out = []
    for name in SECTIONS:
        mod = importlib.import_module(f"fidoctor.snapshot.gather.{name}")
        out.append(Gatherer(name=mod.NAME, budget_s=min(float(getattr(mod, "BUDGET_S", 5.0)),
                                                        GATHER_BUDGET_S),
                            requires=tuple(r for r in getattr(mod, "REQUIRES", ())
                                           if r not in INDEPENDENT.get(name, ())),
                            gather=mod.gather,
                            order=int(getattr(mod, "ORDER", 100))))
    out.append(Gatherer(name="cache_mount", budget_s=MOUNT_GATHERER_BUDGET_S, requires=(),
                        gather=_probe_mount, order=0))
    return sorted(out, key=lambda g: (g.order, g.name))


def gather_budget() -> float:
    """What is left of the 5 s cap for gathering, counted from this process's start."""
    import time

    import psutil

    try:
        started = psutil.Process().create_time()
    except psutil.Error:
        return GATHER_BUDGET_S
    return max(1.0, min(GATHER_BUDGET_S, HARD_CAP_S - 0.6 - (time.time() - started)))
