"""build-memory-thrash: a real nvcc build of a real FlashInfer module thrashing in a real memcg.

The "server" (tests/memcg_helpers.py) joins a 200 MB child memory cgroup of the test's own
and runs ninja -j1 on a module FlashInfer 0.7.2.post1 wrote, with the real nvcc 13.0. The
toolchain's pages were evicted first (posix_fadvise DONTNEED on cudafe++, cicc, cc1plus,
ptxas… and their libraries; no global drop_caches), so the compilers' code is read back
inside the cgroup and charged to it: cudafe++ reaches ~193 MB anon and the kernel, instead
of OOM-killing it, reclaims and refaults its code (failcnt +20,000–116,000/s, oom_kill 0).
The test checks that it really thrashes before it diagnoses (else it skips, saying why).
The quiet twin is the same cold build with headroom (2 GB).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from memcg_helpers import cold_build, counters, limit_file, wait_for_thrash
from proc_helpers import pid_alive, same_alive

from fidoctor.diagnosis import diagnose
from fidoctor.snapshot.context import build_context
from fidoctor.snapshot.runner import gather_snapshot

ID = "build-memory-thrash"
pytestmark = pytest.mark.slow  # a real FlashInfer compile (30–100 s here); CI's 3.13 suite runs it


def by_id(diag, id_):
    return [f for f in diag.findings if f.id == id_]


@pytest.mark.timeout(280)  # evict ≤30 s, thrash ≤90 s, two fix runs ≤60 s each
def test_thrashing_build_is_named_with_its_evidence_and_never_called_progressing(
        tmp_path, memcg, procs):
    p, mod, env, left = cold_build(tmp_path, procs, memcg)
    seen = wait_for_thrash(memcg, p, left=left)
    t0 = time.monotonic()
    diag = diagnose(gather_snapshot(build_context(pid=p.pid)))
    took = time.monotonic() - t0
    found = by_id(diag, ID)
    if not found and counters(memcg)["oom_kill"]:
        pytest.skip("the kernel ended the thrash with an OOM kill while fidoctor looked")
    [f] = found
    print(f"\n{ID}: verdict {took:.1f} s after the thrash was seen "
          f"({seen['hits_per_s']:.0f} limit hits/s); data: "
          f"{json.dumps({k: f.data[k] for k in ('limit_hits_per_s', 'majflt_per_s', 'usage')})}")
    assert f.severity == "error" and f.data["affects"] == [mod.name]
    assert f.data["limit"] == 200 << 20 and f.data["usage"] >= 0.95 * (200 << 20)
    assert f.data["limit_hits_per_s"] >= 1000 and f.data["majflt_per_s"] >= 10
    assert any("oom_kill +0" in e for e in f.evidence), f.evidence
    assert any("major page faults" in e and any(c in e for c in ("cudafe++", "cicc", "cc1plus"))
               for e in f.evidence), f.evidence
    cg = diag.snapshot.data("oom")["cgroup"]
    if cg["version"] == 1:
        assert any("no per-cgroup memory pressure" in e for e in f.evidence)
    # 200 MB holds no 0.5 GiB decode job: fewer jobs cannot help; the limit must go up
    assert f.data["max_jobs"] is None
    assert [x.id for x in f.fixes] == ["", "terminate-build-tree"]
    assert "Raise the server's memory limit" in f.fixes[0].description
    # the same tree is never called "progressing", nor killed for memory
    for g in by_id(diag, "build-process-stuck"):
        assert g.data["module_dir"] != str(mod) or g.caused_by == ID, g.title
    assert not by_id(diag, "build-killed")
    # The new facts are declared (TypedDicts) and valid against the snapshot schema.
    import jsonschema
    from test_snapshot_types import undeclared

    from fidoctor.snapshot import types as T

    for name, tp in (("oom", T.OomFacts), ("processes", T.ProcessesFacts)):
        assert undeclared(diag.snapshot.data(name), tp, name) == []
    assert cg["sample"]["failcnt" if cg["version"] == 1 else "max"] > 0
    assert any(x.get("majflt_delta") for x in diag.snapshot.data("processes")["processes"])
    diag.snapshot.save(str(tmp_path / "snap.json"))
    schema = json.loads((Path(__file__).parent.parent / "fidoctor" / "schema" /
                         "snapshot.schema.json").read_text())
    jsonschema.validate(json.loads((tmp_path / "snap.json").read_text()), schema)
    _replayed_edits(tmp_path / "snap.json", mod.name)

    # Ended only when asked by name, through the fix transaction, re-checked on the live cgroup.
    from fix_helpers import cli

    fenv = dict(env, XDG_STATE_HOME=str(tmp_path / "state"))
    tree = {int(x): ct for x, ct in f.data["create_times"].items() if int(x) != p.pid}
    alive = [x for x, ct in tree.items() if same_alive(x, ct)]

    def thrash_ended(step):  # no OOM kill had happened when the thrash was seen
        if counters(memcg)["oom_kill"]:
            pytest.skip(f"the finding was checked; {step} was not: the kernel ended the thrash "
                        "with an OOM kill first")

    r = cli(["fix", "--yes", "--no-warmup", "--pid", str(p.pid), "--only", ID], fenv, timeout=60)
    thrash_ended("the fix not asked by name")
    assert "--use terminate-build-tree" in r.stdout + r.stderr, r.stdout + r.stderr
    assert alive and all(same_alive(x, tree[x]) for x in alive), "ended without being asked"
    r = cli(["fix", "--yes", "--no-warmup", "--pid", str(p.pid), "--only", ID,
             "--use", "terminate-build-tree"], fenv, timeout=60)
    thrash_ended("terminate-build-tree")
    assert r.returncode == 0, r.stdout + r.stderr
    deadline = time.monotonic() + 10
    while any(same_alive(x, tree[x]) for x in alive) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(same_alive(x, tree[x]) for x in alive), r.stdout
    assert pid_alive(p.pid), "the server itself was signalled"


def _replayed_edits(path, name):
    """The same real snapshot, replayed with one fact edited (no new thrash is made):
    the kernel killing inside the window, usage off the limit and page cache filling it are
    quiet; the same counters read as cgroup v2 (memory.events max, PSI) fire with PSI
    evidence; a 1 GiB limit that fits one decode job offers set-max-jobs first."""
    from fidoctor.snapshot import Snapshot

    def edited(edit):
        snap = Snapshot.from_dict(json.loads(path.read_text()))
        edit(snap.sections["oom"].data["cgroup"])
        return by_id(diagnose(snap), ID)

    assert edited(lambda cg: cg["sample"].update(oom_kill=1)) == []
    assert edited(lambda cg: cg["sample"].update(usage_end=cg["limit"] // 2)) == []
    assert edited(lambda cg: cg["stat"].update(anon=cg["limit"] // 2)) == []

    def as_v2(cg):
        cg.update(version=2, failcnt=None, pressure={"some_avg10": 91.0, "full_avg10": 88.5})
        cg["sample"].update(max=cg["sample"].pop("failcnt"), failcnt=None)

    [v2] = edited(as_v2)
    assert v2.data["affects"] == [name]
    assert any("full avg10 88.5 %" in e for e in v2.evidence), v2.evidence

    def one_gib(cg):
        cg.update(limit=1 << 30, usage=1 << 30, stat=dict(cg["stat"], anon=int(0.9 * (1 << 30))))
        cg["sample"].update(usage_end=1 << 30)

    [g] = edited(one_gib)
    assert g.data["max_jobs"] == 1 and g.fixes[0].id == "set-max-jobs", [x.id for x in g.fixes]


@pytest.mark.timeout(200)
def test_same_cold_build_with_headroom_is_quiet(tmp_path, memcg, procs):
    limit_file(memcg).write_text("2G")
    p, mod, _, _ = cold_build(tmp_path, procs, memcg)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:  # cudafe++ (the step that thrashes at 200 MB) runs
        names = set()
        for pid in (memcg / "cgroup.procs").read_text().split():
            try:
                names.add(Path(f"/proc/{pid}/comm").read_text().strip())
            except OSError:
                pass
        if "cudafe++" in names:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"cudafe++ did not start in 90 s (server exit {p.poll()})")
    diag = diagnose(gather_snapshot(build_context(pid=p.pid)))
    assert not by_id(diag, ID)
    cg = diag.snapshot.data("oom")["cgroup"]
    assert cg["limit"] == 2 << 30 and cg["usage"] < 0.9 * cg["limit"] and "sample" not in cg
    tree = [x for x in diag.snapshot.data("processes")["processes"]
            if x.get("module_dir") == str(mod)]  # other tests may build a same-named module
    assert tree, "the live build was not seen"
    assert any(x.get("majflt") is not None and x.get("memcg", "").endswith(memcg.name)
               for x in tree)
    print("\nquiet twin saw:", [(x.get("name"), x.get("majflt_delta")) for x in tree])
