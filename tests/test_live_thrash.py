"""The live watch names a real build that thrashes at its memory limit (memory-thrash event).

The same real thrash as test_build_memory_thrash.py (tests/memcg_helpers.py: a "server" in a
200 MB child memory cgroup runs ninja -j1 on a module FlashInfer 0.7.2.post1 wrote, with the
real nvcc 13.0, after the toolchain's pages were evicted so the compilers' code is charged to
the cgroup), watched by a real ``fidoctor watch --pid``. The test first sees the thrash on
the cgroup itself (else it skips, saying why: the kernel often OOM-kills before), then waits
for the watch's event. The quiet twin is the same cold build with 2 GB: it is watched from
start to end and no memory-thrash event is said.
"""

from __future__ import annotations

import json
import time
from importlib import resources

import jsonschema
import pytest
from memcg_helpers import cold_build, counters, limit_file, wait_for_thrash

from tests.live_helpers import events_of, fidoctor_argv

ID = "build-memory-thrash"
pytestmark = pytest.mark.slow  # a real FlashInfer compile (30–100 s here)


def _valid(events):
    schema = json.loads(resources.files("fidoctor").joinpath("schema/events.schema.json")
                        .read_text())
    for e in events:
        jsonschema.validate(e, schema)
    return events


def _watch(procs, tmp_path, pid):
    ev = tmp_path / "ev.jsonl"
    w = procs.start(fidoctor_argv("watch", "--pid", str(pid), "--events", str(ev),
                                  "--stall-after", "600", "--progress-every", "5", "--quiet"))
    return w, ev


def _first(ev, kind):
    return next((e for e in events_of(ev) if e["event"] == kind), None)


@pytest.mark.timeout(240)  # evict ≤30 s, thrash seen ≤90 s, the event ≤60 s after
def test_watch_says_memory_thrash_with_the_finding_and_the_cgroup_figures(
        tmp_path, memcg, procs):
    p, mod, _, left = cold_build(tmp_path, procs, memcg)
    w, ev = _watch(procs, tmp_path, p.pid)
    seen = wait_for_thrash(memcg, p, left=left)
    deadline = time.monotonic() + 60
    while (e := _first(ev, "memory-thrash")) is None and time.monotonic() < deadline:
        if counters(memcg)["oom_kill"]:
            pytest.skip("the kernel ended the thrash with an OOM kill before the watch judged it "
                        f"(thrash seen at {seen['hits_per_s']:.0f} limit hits/s)")
        assert w.poll() is None, events_of(ev)
        time.sleep(0.5)
    assert e is not None, [x["event"] for x in events_of(ev)]
    print(f"\nmemory-thrash event: {e['text']}")
    _valid(events_of(ev))
    assert e["finding_id"] == ID and e["severity"] == "error"
    assert e["module"] == mod.name and e["module_dir"] == str(mod)
    assert e["limit"] == 200 << 20 and e["usage"] >= 0.95 * (200 << 20)
    assert e["limit_hits_per_s"] >= 1000 and e["majflt_per_s"] >= 10
    assert e["cgroup_dir"] == str(memcg) and e["pids"]
    assert [f["id"] for f in e["findings"]] == [ID]
    assert "MEMORY THRASH" in e["text"] and "no OOM kill" in e["text"]
    # said once per build, not every tick
    time.sleep(3)
    assert [x["event"] for x in events_of(ev)].count("memory-thrash") == 1


@pytest.mark.timeout(260)
def test_same_cold_build_with_headroom_is_watched_to_its_end_without_a_thrash(
        tmp_path, memcg, procs):
    limit_file(memcg).write_text("2G")
    p, mod, _, _ = cold_build(tmp_path, procs, memcg)
    w, ev = _watch(procs, tmp_path, p.pid)
    deadline = time.monotonic() + 200
    while (end := _first(ev, "build-end")) is None:
        assert time.monotonic() < deadline, f"no build-end in 200 s: {events_of(ev)}"
        assert w.poll() is None, events_of(ev)
        time.sleep(0.5)
    kinds = [x["event"] for x in _valid(events_of(ev))]
    assert end["module"] == mod.name and end["ok"], end
    assert "build-start" in kinds and "progress" in kinds
    assert "memory-thrash" not in kinds, kinds
    assert counters(memcg)["oom_kill"] == 0
