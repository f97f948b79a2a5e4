"""``fidoctor fleet``: a synthetic fleet of 120 nodes made from real snapshots of real boxes.

Four boxes are built and gathered for real (one healthy, three with a fault
each: a truncated .so, a killed build with no .so, a build the JIT log left
unfinished). Each node's report is one of those snapshots with the node's own
host name and its own workspace path (``/scratch/<node>``) written in, as a
real fleet's reports differ; some go in as ``diagnose --json`` outputs, some
as raw snapshots (replayed), some as JSON lines on stdin, two as nodes that
did not answer. Every faulty node must land in its fault's group and no
healthy node anywhere else.
"""

from __future__ import annotations

import json
import time

import jsonschema
import pytest
from conftest import DECODE, FA2, FA3, log_line, run_cli, snapshot_of
from test_script_contracts import schema

from fidoctor.diagnosis import diagnose
from fidoctor.fleet.group import hostlist
from fidoctor.snapshot import Snapshot

CLASSES = ("healthy", "truncated", "killed", "unfinished")


def _box(box_factory, kind: str):
    box = box_factory(kind)
    ws = box.workspace()
    now = time.time()
    box.module(ws, DECODE)
    box.module(ws, FA2, so="missing" if kind == "killed" else "good", objects=2)
    box.module(ws, FA3, so="truncated" if kind == "truncated" else "good")
    if kind == "unfinished":
        box.log(ws, [log_line("new", "building", DECODE, now - 900),
                     log_line("new", "building", FA2, now - 120)])
        # FA2 rebuilt since: its .so stays good; the log's open build is another module
        box.module(ws, "gemm_sm90_unfinished", so="missing", objects=1)
        box.log(ws, [log_line("new", "building", "gemm_sm90_unfinished", now - 60)])
    return box


@pytest.fixture(scope="module")
def real_snaps(tmp_path_factory, built_so_module):
    from conftest import Box

    def factory(kind):
        base = tmp_path_factory.mktemp(f"fleet-{kind}") / "base"
        base.mkdir()
        return Box(base, built_so_module)

    out = {}
    for kind in CLASSES:
        box = _box(factory, kind)
        snap = snapshot_of(box)
        out[kind] = (json.dumps(snap.to_dict()), str(box.base))
    return out


@pytest.fixture(scope="module")
def built_so_module(tmp_path_factory):
    import subprocess

    d = tmp_path_factory.mktemp("elf-fleet")
    (d / "mod.c").write_text("int fidoctor_fixture(int x) { return x + 1; }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(d / "mod.so"), str(d / "mod.c")],
                   check=True)
    return d / "mod.so"


def node_snapshot(real_snaps, kind: str, name: str) -> dict:
    text, base = real_snaps[kind]
    d = json.loads(text.replace(base, f"/scratch/{name}"))
    d["sections"]["host"]["data"]["hostname"] = name
    return d


def class_of(i: int) -> str:
    return "truncated" if i % 17 == 3 else "killed" if i % 13 == 5 else \
        "unfinished" if i % 11 == 7 else "healthy"


def test_the_four_real_boxes_are_what_they_claim(real_snaps):
    for kind in CLASSES:
        diag = diagnose(Snapshot.from_dict(node_snapshot(real_snaps, kind, "n1")))
        problems = sorted({f.id for f in diag.findings if f.is_problem})
        assert (problems == []) == (kind == "healthy"), (kind, problems)


def test_120_nodes_land_in_their_groups(real_snaps, tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    want = {}
    stdin_lines = []
    for i in range(1, 121):
        name = f"gpu{i:03d}"
        kind = class_of(i)
        want[name] = kind
        snap = node_snapshot(real_snaps, kind, name)
        if i % 5 == 0:  # a raw snapshot: fleet replays it through the probes
            (reports / f"{name}.json").write_text(json.dumps(snap))
        else:
            doc = diagnose(Snapshot.from_dict(snap)).to_json()
            if i % 7 == 0:
                stdin_lines.append(json.dumps(doc))
            else:
                (reports / f"{name}.json").write_text(json.dumps(doc))
    stdin_lines.append(json.dumps({"node": "gpu121", "unreachable": "timed out after 60 s"}))
    stdin_lines.append("{ not json")
    r = run_cli(["fleet", "--json", str(reports), "-"], input_text="\n".join(stdin_lines) + "\n")
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    jsonschema.validate(doc, schema("fleet"))
    placed = {}
    for g in doc["groups"]:
        assert g["ids"] == sorted(g["ids"])
        for n in g["nodes"]:
            assert n not in placed
            placed[n] = tuple((f["id"], f["subject"]) for f in g["findings"])
    assert set(placed) == set(want)
    by_class = {}
    for name, kind in want.items():
        by_class.setdefault(kind, set()).add(placed[name])
    for kind, fps in by_class.items():
        assert len(fps) == 1, (kind, fps)  # one group per fault class
    assert by_class["healthy"] == {()}
    assert len({next(iter(v)) for v in by_class.values()}) == 4  # four distinct groups
    sig = {k: next(iter(v)) for k, v in by_class.items()}
    assert ("cache-incomplete-module", f"<root>/0.7.2.post1/90a/cached_ops/{FA3}") \
        in sig["truncated"]
    assert ("cache-incomplete-module", f"<root>/0.7.2.post1/90a/cached_ops/{FA2}") \
        in sig["killed"]
    assert "jit-log-unfinished" in {i for i, _ in sig["unfinished"]}
    unreach = {u["node"]: u["reason"] for u in doc["unreachable"]}
    assert unreach["gpu121"] == "timed out after 60 s"
    assert any(k.startswith("stdin:") and "not JSON" in v for k, v in unreach.items())
    assert all(n["named_by"] == "hostname" for n in doc["nodes"])
    # every node has the same versions and its own local cache: nothing across nodes
    assert [f["id"] for f in doc["fleet_findings"] if f["id"] != "fleet-straggler"] == []
    text = run_cli(["fleet", str(reports)])
    lines = text.stdout.splitlines()
    assert len(lines) <= 15, text.stdout
    assert lines[1].startswith("✓ healthy (")
    md = run_cli(["fleet", "--markdown", str(reports)]).stdout
    assert md.startswith("## fidoctor fleet: ") and "| nodes | count |" in md


def test_killed_nodes_are_stragglers_of_a_warm_fleet(real_snaps, tmp_path):
    reports = tmp_path / "r"
    reports.mkdir()
    for i in range(1, 11):
        kind = "killed" if i == 4 else "healthy"
        doc = diagnose(Snapshot.from_dict(node_snapshot(real_snaps, kind, f"n{i:02d}"))).to_json()
        (reports / f"n{i:02d}.json").write_text(json.dumps(doc))
    doc = json.loads(run_cli(["fleet", "--json", str(reports)]).stdout)
    st = [f for f in doc["fleet_findings"] if f["id"] == "fleet-straggler"]
    assert [f["nodes"] for f in st] == [["n04"]] and st[0]["subject"] == "n04"
    assert st[0]["data"]["modules"] == [f"0.7.2.post1/90a/{FA2}"]
    # the quiet twin: all warm
    (reports / "n04.json").write_text(json.dumps(diagnose(Snapshot.from_dict(
        node_snapshot(real_snaps, "healthy", "n04"))).to_json()))
    doc = json.loads(run_cli(["fleet", "--json", str(reports)]).stdout)
    assert doc["fleet_findings"] == [] and doc["summary"]["exit_code"] == 0


def test_redacted_snapshot_is_named_by_its_file(real_snaps, tmp_path):
    from fidoctor.report import redacted_snapshot

    snap = Snapshot.from_dict(node_snapshot(real_snaps, "healthy", "secret-host-7"))
    red, _ = redacted_snapshot(snap)
    assert red.data("host")["hostname"].startswith("<host-")
    p = tmp_path / "rack4-slot2.json"
    p.write_text(json.dumps(red.to_dict()))
    r = run_cli(["fleet", "--json", str(p)])
    doc = json.loads(r.stdout)
    assert doc["nodes"][0]["name"] == "rack4-slot2" and doc["nodes"][0]["named_by"] == "file"
    assert "secret-host-7" not in r.stdout
    assert "named by their file name" in run_cli(["fleet", str(p)]).stdout


def test_bad_inputs_are_listed_or_refused_in_one_line(tmp_path):
    (tmp_path / "fifo.json").unlink(missing_ok=True)
    import os

    os.mkfifo(tmp_path / "fifo.json")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "notes.txt").write_text("ignored")
    r = run_cli(["fleet", "--json", str(tmp_path)])
    assert r.returncode == 2 and "Traceback" not in r.stderr  # nothing answered at all
    doc = json.loads(r.stdout)
    reasons = {u["node"]: u["reason"] for u in doc["unreachable"]}
    assert "not a regular file" in reasons["fifo"] and "nests deeper" in reasons["deep"]
    for args in (["fleet"], ["fleet", str(tmp_path / "absent")]):
        r = run_cli(args)
        assert r.returncode == 2 and r.stderr.startswith("fidoctor: error: ")
        assert "Traceback" not in r.stderr


def test_hostile_names_in_reports_are_shown_escaped(real_snaps, tmp_path):
    """A report is input from another machine: a host name, a finding's subject or an
    unreachable reason holding escape sequences or a newline went raw into the text and the
    Markdown (the terminal retitled, a line forged). Now they are shown escaped."""
    evil = "gpu9\x1b]0;owned\x07\nWARNING forged"
    d = node_snapshot(real_snaps, "truncated", "gpu9")
    d["sections"]["host"]["data"]["hostname"] = evil
    (tmp_path / "a.json").write_text(json.dumps(d))
    (tmp_path / "u.jsonl").write_text(json.dumps({"node": "gpu8\x1b[2J",
                                                  "unreachable": "timed out\x1b[8m"}) + "\n")
    for fmt in ([], ["--markdown"]):
        r = run_cli(["fleet", *fmt, str(tmp_path)])
        assert r.returncode == 1, r.stdout + r.stderr
        assert "\x1b" not in r.stdout and "\x07" not in r.stdout, r.stdout
        assert not any(ln.startswith("WARNING forged") for ln in r.stdout.splitlines())
        assert "gpu9\\x1b]0;owned" in r.stdout, r.stdout
    j = json.loads(run_cli(["fleet", "--json", str(tmp_path)]).stdout)
    assert evil in {n["name"] for n in j["nodes"]}  # the data stays as it was


def test_hostlist_compresses_like_slurm():
    assert hostlist(["gpu001", "gpu002", "gpu003", "gpu007", "login"]) == "gpu[001-003,007],login"
    assert hostlist(["a9", "a10", "a11"]) == "a[9-11]"


def _fleet_json(tmp_path, docs):
    d = tmp_path / "reports"
    d.mkdir(exist_ok=True)
    for name, doc in docs.items():
        (d / f"{name}.json").write_text(json.dumps(doc))
    r = run_cli(["fleet", "--json", str(d)])
    assert r.returncode in (0, 1), r.stderr
    out = json.loads(r.stdout)
    jsonschema.validate(out, schema("fleet"))
    return out


def _gathered(box, name, **env):
    ws = box.workspace()
    box.module(ws, DECODE)
    snap = snapshot_of(box, **env)
    snap.sections["host"].data["hostname"] = name  # one machine plays each node
    return diagnose(snap).to_json()


def test_shared_cache_on_one_real_sshfs_export(tmp_path, built_so, procs):
    """Two nodes mount one served dir (two real sshfs mounts, one source); a third its own."""
    from conftest import Box
    from fs_helpers import ensure_sshfs, sshfs_loopback

    why = ensure_sshfs()
    if why:
        pytest.skip(why)
    served, other = tmp_path / "served", tmp_path / "other"
    with sshfs_loopback(served, tmp_path / "m1", procs) as m1, \
            sshfs_loopback(served, tmp_path / "m2", procs) as m2, \
            sshfs_loopback(other, tmp_path / "m3", procs) as m3:
        (m1 / "base").mkdir()
        (m3 / "base").mkdir()
        docs = {n: _gathered(Box(m / "base", built_so), n)
                for n, m in (("a1", m1), ("a2", m2), ("b1", m3))}
    out = _fleet_json(tmp_path, docs)
    [f] = [f for f in out["fleet_findings"] if f["id"] == "fleet-shared-cache"]
    assert f["nodes"] == ["a1", "a2"] and f["severity"] == "error"
    assert f["data"]["fstype"] == "fuse.sshfs" and f["data"]["node_local_locks"] is True
    assert f["data"]["sources"] == [f"localhost:{served}"]
    assert "does not forward flock" in f["data"]["locks"]


def test_node_local_caches_share_nothing(tmp_path, built_so):
    from conftest import Box

    docs = {}
    for n in ("c1", "c2", "c3"):
        (tmp_path / n).mkdir()
        docs[n] = _gathered(Box(tmp_path / n, built_so), n)
    out = _fleet_json(tmp_path, docs)
    assert out["fleet_findings"] == [] and out["summary"]["exit_code"] == 0


def test_version_and_cuda_home_drift_name_the_odd_nodes(tmp_path, built_so, real_snaps):
    from conftest import Box

    docs = {}
    for n in ("d1", "d2", "d3", "d4"):
        (tmp_path / n).mkdir()
        # d4 spells the same toolkit another way: build.ninja records the string
        home = "/usr/local/cuda/" if n == "d4" else "/usr/local/cuda"
        docs[n] = _gathered(Box(tmp_path / n, built_so), n, CUDA_HOME=home)
    # fidoctor's own venv (the target here) has no FlashInfer: the versions are written in,
    # as the target gatherer reports them on a node that has one; d3 has an older install
    for n, doc in docs.items():
        doc["node"]["versions"]["flashinfer"] = "0.6.1" if n == "d3" else "0.7.2.post1"
    out = _fleet_json(tmp_path, docs)
    drift = {f["subject"]: f for f in out["fleet_findings"] if f["id"] == "fleet-version-drift"}
    assert set(drift) == {"cuda_home", "flashinfer"}
    assert drift["cuda_home"]["nodes"] == ["d4"]
    assert drift["flashinfer"]["nodes"] == ["d3"]
    assert drift["flashinfer"]["data"]["majority"] == "0.7.2.post1"


def test_a_node_that_was_not_checked_says_so_once(real_snaps, tmp_path, box):
    """A real ``diagnose --json`` of a node whose target has no FlashInfer (not checked, exit
    2) beside a healthy node's snapshot. Before: the text summary read "not checked: not
    checked: the target interpreter …"."""
    import sys

    (tmp_path / "r").mkdir()
    r = run_cli(["diagnose", "--json", "--python", sys.executable], env=box.env())
    assert r.returncode == 2, r.stdout
    (tmp_path / "r" / "bare.json").write_text(r.stdout)
    (tmp_path / "r" / "n1.json").write_text(json.dumps(node_snapshot(real_snaps, "healthy", "n1")))
    r = run_cli(["fleet", str(tmp_path / "r")])
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("?"))
    assert line.count("not checked") == 1 and "has no FlashInfer" in line, line
    assert r.returncode == 1


def test_pretty_printed_reports_piped_in_are_one_node_each(real_snaps, tmp_path):
    """``cat reports/*.json | fidoctor fleet -`` (the hint fleet itself prints for a terminal
    on stdin), where each file is a ``diagnose --json`` (indented, 200 lines): each report is
    one node. Before: every line was read as a report, ~200 "unreachable nodes" per report
    and none answered (exit 2). The same for one file of reports written one after another.
    A garbage line between them costs that line only."""
    outs = []
    for kind, name in (("healthy", "n1"), ("truncated", "n2")):
        snap = tmp_path / f"{name}.snapshot.json"
        snap.write_text(json.dumps(node_snapshot(real_snaps, kind, name)))
        r = run_cli(["diagnose", "--json", "--from", str(snap)])
        assert r.returncode in (0, 1) and r.stdout.count("\n") > 50, r.stderr
        outs.append(r.stdout)
    piped = (outs[0] + "not json at all\n" + '{"node": "n3", "unreachable": "timed out"}\n'
             + outs[1])
    r = run_cli(["fleet", "--json", "-"], input_text=piped)
    doc = json.loads(r.stdout)
    assert sorted(n["name"] for n in doc["nodes"]) == ["n1", "n2"]
    lines = outs[0].count("\n")
    bad = f"stdin:{lines + 1}"
    assert sorted((u["node"], u["reason"][:len(bad) + 31]) for u in doc["unreachable"]) == [
        ("n3", "timed out"), (bad, f"unreadable report: {bad} is not JSON")]
    assert r.returncode == 1
    (tmp_path / "all.json").write_text(outs[0] + outs[1])
    doc = json.loads(run_cli(["fleet", "--json", str(tmp_path / "all.json")]).stdout)
    assert sorted(n["name"] for n in doc["nodes"]) == ["n1", "n2"] and doc["unreachable"] == []
