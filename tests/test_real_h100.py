"""Ground truth from a real H100 (tests/fixtures/real-h100/, README there says how each
file was produced): real snapshots replay to the verdicts fidoctor gave on the GPU box,
and fidoctor's own ELF and lock facts agree with binutils and /proc/locks captured
beside them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fidoctor.diagnosis import diagnose
from fidoctor.flashinfer.jitlog import parse_log
from fidoctor.snapshot import Snapshot

REAL = Path(__file__).parent / "fixtures" / "real-h100"
FA3_NAME = ("batch_prefill_with_kv_cache_dtype_q_bf16_dtype_kv_bf16_dtype_o_bf16_dtype_idx_i32"
            "_head_dim_qk_128_head_dim_vo_128_posenc_0_use_swa_False_use_logits_cap_False"
            "_f16qk_False_sm90")


def replay(name):
    snap = Snapshot.load(str(REAL / f"snap_{name}.json"))
    return snap, diagnose(snap)


def problems(diag):
    return [(f.id, f.severity) for f in diag.findings if f.is_problem]


def test_healthy_gpu_box_has_no_false_alarm():
    snap, diag = replay("healthy")
    assert diag.exit_code == 0, problems(diag)
    assert diag.findings == []
    # probes newer than the capture say which sections it lacks, and nothing else
    assert all(i.reason.startswith("missing facts: ") and "(not gathered)" in i.reason
               and all(r.split(" ")[0] not in snap.sections
                       for r in i.reason[len("missing facts: "):].split(", "))
               for i in diag.inconclusive), diag.inconclusive
    assert all(s.ok for s in snap.sections.values())
    t = diag.to_json()["target"]
    assert (t["torch"], t["torch_cuda"], t["flashinfer"]) == ("2.11.0", "13.0", "0.7.2.post1")
    ws = snap.data("cache")["workspaces"]
    assert [(w["version"], w["arch"]) for w in ws] == [("0.7.2.post1", "90a")]


def _nm_undefined(path):
    """``name@version`` of every undefined cuda* symbol in an ``nm -D --undefined-only`` dump."""
    syms = re.findall(r"^\s+U (\S+)$", path.read_text(), re.M)
    return {s for s in syms if s.split("@")[0].lstrip("_").startswith("cuda")}


@pytest.mark.parametrize("kind", ["fa2", "fa3"])
def test_elf_facts_read_on_the_h100_match_binutils(kind):
    """fidoctor read the real modules on the GPU box; binutils read the same files."""
    snap, _ = replay("healthy")
    header = (REAL / f"{kind}_nm.txt").read_text().splitlines()[0]
    so_name = re.search(r"module (\S+\.so)>", header).group(1)
    [facts] = [v for k, v in snap.data("elf")["modules"].items() if k.endswith("/" + so_name)]
    mine = {f"{n}@{v}" for n, v, _ in facts["undefined"]}
    assert mine == _nm_undefined(REAL / f"{kind}_nm.txt")
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(\S+)\]", (REAL / f"{kind}_readelf.txt").read_text())
    assert facts["needed"] == needed
    needs_by_version = "cudaGetDriverEntryPointByVersion@libcudart.so.13" in mine
    assert needs_by_version == (kind == "fa3")  # the sm90/TMA module needs it, FA2 does not


def test_loaded_runtime_on_the_h100_is_torchs_pip_copy_and_exports_what_fa3_needs():
    """h100-facts.md: /proc/PID/maps of a torch process showed pip's nvidia/cu13 copy,
    not the toolkit's (which ldd reports). fidoctor's prediction must agree."""
    snap, diag = replay("healthy")
    cudart = snap.data("cudart")
    [loaded] = cudart["loaded"]
    assert loaded["path"].endswith("/site-packages/nvidia/cu13/lib/libcudart.so.13")
    assert "libtorch_cuda.so NEEDED libcudart.so.13" in loaded["via"]
    exports = cudart["libraries"][loaded["path"]]["exports"]
    assert exports["cudaGetDriverEntryPointByVersion"] == "@@libcudart.so.13"
    assert "cudart-missing-symbol" not in {f.id for f in diag.findings}


def test_real_jit_log_is_the_07_format():
    r = parse_log(str(REAL / "flashinfer_jit.log"))
    assert r["format"] == "0.7" and r["garbage_lines"] == 0
    assert FA3_NAME in r["modules"]
    assert all(m["last_start"]["event"] == "building" for m in r["modules"].values())


def test_lock_wait_on_the_h100_is_a_cold_build_not_a_hang():
    _, diag = replay("lockwait")
    assert problems(diag) == []
    ids = {(f.id, f.severity) for f in diag.findings}
    assert {("build-process-stuck", "info"), ("jit-log-unfinished", "info")} <= ids


def test_orphans_of_a_killed_server_are_one_warning_with_an_opt_in_terminate():
    _, diag = replay("orphans")
    [f] = [f for f in diag.findings if f.id == "build-process-stuck"]
    assert f.severity == "warning" and f.data["orphaned"] and f.data["progressing"]
    assert "hd256, FA3" in f.title
    assert [x.id for x in f.fixes] == ["", "terminate-build-tree"]
    assert "--use terminate-build-tree" in f.fixes[1].commands[0]
    ps = (REAL / "orphan_procs.txt").read_text()
    for pid in f.data["pids"][:5]:  # the pids fidoctor named were in the real process table
        assert re.search(rf"^\s*{pid}\s", ps, re.M)


def test_stuck_holder_matches_proc_locks_and_names_the_waiter():
    snap, diag = replay("stuck_holder")
    [f] = [f for f in diag.findings if f.id == "build-lock-held"]
    assert f.severity == "error"
    held = re.search(r"FLOCK\s+ADVISORY\s+WRITE\s+(\d+)\s+(\w+:\w+):(\d+)",
                     (REAL / "holder_procs.txt").read_text())
    pid, ino = int(held.group(1)), int(held.group(3))
    [lock] = [lk for lk in snap.data("locks")["locks"] if lk["holders"]]
    assert (lock["holders"], lock["ino"]) == ([pid], ino)
    waiter = re.search(r"^\s*(\d+)\s.*filelock", (REAL / "holder_procs.txt").read_text(), re.M)
    assert str(waiter.group(1)) in json.dumps(f.to_dict())
