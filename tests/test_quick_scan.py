"""``--level quick``'s cheap cache scan and lock count (issue 20's 10,000-module budget).

Real boxes: gcc-built .so files, real module dirs, a real flock held by a real
process. Each shortcut has its twin: what it skips is listed again as soon as it
could matter (a module without a loadable .so, a workspace old enough for
FileBatons, a lock file someone holds).
"""

from __future__ import annotations

import os
import time

import psutil
import pytest
from conftest import DECODE, FA2, FA3
from proc_helpers import HOLDER, script, set_subreaper

from fidoctor import quick
from fidoctor.diagnosis import diagnose
from fidoctor.snapshot.context import build_context
from fidoctor.snapshot.runner import gather_snapshot

pytestmark = pytest.mark.timeout(90)


def quick_snapshot(box):
    ctx = build_context(env=box.env())
    ctx.extra["level"] = "quick"
    return gather_snapshot(ctx, gatherers=quick.gatherers())


def modules(snap):
    return {m["name"]: m for ws in snap.data("cache")["workspaces"] for m in ws["modules"]}


def test_a_loadable_so_is_the_whole_record_and_a_broken_one_is_listed(box):
    ws = box.workspace()  # 0.7.2.post1/90a: filelock under tmp/, never a FileBaton
    box.module(ws, DECODE, depfiles=1, ninja_lock=True)  # leftovers beside a good .so
    box.module(ws, FA3, so="truncated", depfiles=2, ninja_lock=True)
    box.module(ws, FA2, so="missing")
    snap = quick_snapshot(box)
    mods = modules(snap)
    good = mods[DECODE]
    assert set(good) == {"name", "path", "so", "newest_mtime"}
    assert good["so"]["problem"] is None and good["so"]["kind"] == "file"
    assert good["newest_mtime"] == os.stat(good["so"]["path"]).st_mtime
    # The broken ones get the dir listing: what explains them is there.
    assert mods[FA3]["so"]["problem"].startswith("truncated ELF")
    assert mods[FA3]["stale_depfiles"] and mods[FA3]["ninja_lock"] and mods[FA3]["objects"] == 3
    assert mods[FA2]["so"] is None and mods[FA2]["build_ninja"] and mods[FA2]["objects"] == 3
    diag = diagnose(snap)
    found = {f.data["module"]: f for f in diag.findings if f.id == "cache-incomplete-module"}
    assert set(found) == {FA3, FA2}
    assert any("leftover depfile" in e for e in found[FA3].evidence)


def test_an_old_workspace_is_listed_so_its_batons_are_seen(box):
    ws = box.workspace(version=None, arch="90")  # ≤ 0.4.0 layout: no version dir
    d = box.module(ws, DECODE)
    (d / "lock").write_bytes(b"")  # a torch FileBaton beside a good .so
    snap = quick_snapshot(box)
    mod = modules(snap)[DECODE]
    assert mod["baton"]["path"] == str(d / "lock") and mod["build_ninja"]
    locks = snap.data("locks")
    assert "idle_lock_files" not in locks
    assert [lk["style"] for lk in locks["locks"] if lk["path"] == str(d / "lock")] == ["baton"]


def test_idle_lock_files_are_counted_and_a_held_one_is_listed(box, procs):
    ws = box.workspace()
    for m in (DECODE, FA2, FA3):
        box.module(ws, m)
    locks = quick_snapshot(box).data("locks")
    assert locks["locks"] == [] and locks["idle_lock_files"] == 3  # the quiet twin
    lock = ws / "cached_ops" / "tmp" / f"{FA3}.lock"
    holder = procs.python(script(procs.tmp, "holder.py", HOLDER), lock, stdout=-1)
    assert holder.stdout.readline().strip() == b"locked"
    locks = quick_snapshot(box).data("locks")
    assert "idle_lock_files" not in locks
    [held] = [lk for lk in locks["locks"] if lk["path"] == str(lock)]
    assert held["holders"] == [holder.pid] and held["match"] == "dev+inode"


def _many_modules(box, n):
    """``n`` module dirs, each with its own hard link of one gcc-built .so (cheap to make)."""
    ws = box.workspace()
    box.module(ws, DECODE)
    so = ws / "cached_ops" / DECODE / f"{DECODE}.so"
    for i in range(n):
        d = ws / "cached_ops" / f"mod_{i:05d}"
        d.mkdir()
        (d / "build.ninja").write_text(f"name = mod_{i:05d}\ncuda_home = /usr/local/cuda\n")
        os.link(so, d / f"mod_{i:05d}.so")
        (ws / "cached_ops" / "tmp" / f"mod_{i:05d}.lock").write_bytes(b"")
    box.module(ws, FA3, so="truncated")
    return ws


@pytest.mark.parametrize("level", ["full", "quick"])
def test_a_big_cache_scanned_in_two_processes_reads_the_same(box, level):
    """Over SPLIT_OVER module dirs on two cores the scan is shared with a helper process;
    on one core (this process's affinity, inherited by the gatherers) it is not. Both
    describe the same modules and lock files, and the helper does not outlive the scan."""
    from fidoctor.snapshot.gather.cache import SPLIT_OVER

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core here: nothing to split across")
    _many_modules(box, SPLIT_OVER + 50)
    ctx = build_context(env=box.env())
    if level == "quick":
        ctx.extra["level"] = "quick"
    mine = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(mine)})
        one = gather_snapshot(ctx, only=["cache"]).data("cache")
    finally:
        os.sched_setaffinity(0, mine)
    assert set_subreaper(True)  # a helper outliving its gatherer would become our child
    try:
        started = time.time() - 0.02
        two = gather_snapshot(ctx, only=["cache"]).data("cache")
        left = [c for c in psutil.Process().children(recursive=True)
                if c.create_time() >= started]
    finally:
        set_subreaper(False)
    assert left == []
    [w1], [w2] = one["workspaces"], two["workspaces"]
    assert len(w2["modules"]) == SPLIT_OVER + 52 and w2["modules"] == w1["modules"]
    assert sorted(w1["locks"], key=lambda lk: lk["path"]) == w2["locks"]
    assert w1["errors"] == w2["errors"] == [] and "not_scanned" not in w2
    assert [m["name"] for m in w2["modules"] if m["so"]["problem"]] == [FA3]
