"""Ground truth from a real H200 (tests/fixtures/real-h200/, README there says how each file
was produced by bench/h200/ground.sh): the snapshots replay to the verdicts the GPU box called
for, and the JSON fidoctor printed there validates against today's schemas.

Replays only: nothing here needs a GPU. Figures (wall times) live in the README and the
closing note, not in asserts; the few time comparisons below read stamps recorded on the box.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from fidoctor.diagnosis import diagnose
from fidoctor.flashinfer.ninjalog import bounds, read_log
from fidoctor.snapshot import Snapshot

REAL = Path(__file__).parent / "fixtures" / "real-h200"
SCHEMAS = Path(__file__).parent.parent / "fidoctor" / "schema"
FA2_F16 = ("batch_prefill_with_kv_cache_dtype_q_f16_dtype_kv_f16_dtype_o_f16_dtype_idx_i32"
           "_head_dim_qk_128_head_dim_vo_128_posenc_0_use_swa_False_use_logits_cap_False_f16qk_False")
HOLDER, WAITER = 6888, 6905


def replay(name):
    snap = Snapshot.load(str(REAL / f"snap_{name}.json"))
    return snap, diagnose(snap)


def doc(name):
    return json.loads((REAL / name).read_text())


def schema(name):
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


def of(diag, fid):
    return [f for f in diag.findings if f.id == fid]


H200_GPU = {"present": True, "gpus": [{"name": "NVIDIA H200", "compute_cap": "9.0"}],
            "driver_version": "580.159.04", "cuda_driver_version": "13.0",
            "libcuda": "/usr/local/nvidia/lib64/libcuda.so.580.159.04", "absent_reasons": []}


@pytest.mark.parametrize("name", ["fresh", "warm"])
def test_h200_box_gpu_facts_and_no_finding(name):
    """Issue 22 item 1 (fresh box) and the warm default set after the cold warmup."""
    snap, diag = replay(name)
    assert diag.exit_code == 0 and diag.findings == [], [(f.id, f.title) for f in diag.findings]
    assert diag.to_json()["target"]["gpu"] == H200_GPU
    printed = doc(f"diag_{name}.json")           # what diagnose --json printed on the box
    jsonschema.validate(printed, schema("diagnose"))
    assert printed["target"]["gpu"] == H200_GPU and printed["findings"] == []
    assert printed["summary"]["verdict"] == "healthy"


def test_real_arch_mismatch_names_the_sm80_module():
    """Item 2: a single-decode module built under FLASHINFER_CUDA_ARCH_LIST=8.0 on the H200
    failed its real launch; diagnose (the same env) names it, the warm sm_90a box does not."""
    call = doc("arch_call.json")
    assert call["cc"] == [9, 0] and call["arch_list"] == "8.0"
    assert "no kernel image is available for execution on the device" in call["error"]
    snap, diag = replay("arch")
    [f] = of(diag, "cache-arch-mismatch")
    assert f.severity == "warning" and diag.exit_code == 1
    [(name, archs)] = f.data["modules"].items()
    assert name.startswith("single_decode_with_kv_cache_dtype_q_f16") and archs == ["80"]
    assert f.data["gpus"] == ["9.0"] and f.data["arch_list"] == "8.0"
    assert f.data["source"][name] == "build.ninja -gencode"
    printed = doc("diag_arch.json")
    jsonschema.validate(printed, schema("diagnose"))
    assert [x["id"] for x in printed["findings"]] == ["cache-arch-mismatch"]
    assert not of(replay("warm")[1], "cache-arch-mismatch")   # healthy twin: 90a modules


def test_two_ranks_one_lock_diagnose_names_holder_waiter_and_build():
    """Item 6, the wait: 9 s after the waiter started, diagnose --pid WAITER."""
    snap, diag = replay("wait")
    assert diag.exit_code == 0  # a wait on a compiling holder is not a problem
    [f] = of(diag, "build-lock-held")
    assert f.severity == "info"
    text = " ".join([f.title, *f.evidence])
    assert f"pid {HOLDER}" in text and f"waiter pid {WAITER}" in text
    assert "batch_prefill (f16, hd128, FA2)" in f.title and FA2_F16[:60] in text
    [b] = of(diag, "build-process-stuck")
    assert b.severity == "info" and "progressing" in b.title and not b.fixes


def _events():
    return [json.loads(ln) for ln in (REAL / "watch_waiter.jsonl").read_text().splitlines()]


def _timeline():
    out = {}
    for ln in (REAL / "lock_timeline.txt").read_text().splitlines():
        p = ln.split()
        if p[0] == "holder":
            continue
        out[p[0]] = float(p[2] if p[1] == "start" else p[1])
    return out


def test_watch_of_the_waiter_named_holder_then_the_free_lock_within_10s():
    """Item 6 through `fidoctor watch --pid WAITER --events`: recorded stamps on the box."""
    ev = _events()
    for e in ev:
        jsonschema.validate(e, schema("events"))
    waiting_since = json.loads((REAL / "rank_waiter.jsonl").read_text().splitlines()[0])["t"]
    [wait] = [e for e in ev if e["event"] == "lock-wait"]
    assert f"held by pid {HOLDER}" in wait["text"] and "batch_prefill (f16, hd128, FA2)" in wait["text"]
    assert wait["t"] - waiting_since < 10
    killed = _timeline()["holder_killed"]
    [end] = [e for e in ev if e["event"] == "lock-end"]
    assert "is free" in end["text"] and 0 < end["t"] - killed < 10
    assert [e["event"] for e in ev][-2:] == ["build-end", "exit"]
    assert not [e for e in ev if e["event"] in ("stall", "server-error")]


def _tree_of(snap, top):
    procs = snap.data("processes")["processes"]
    kids, out = {}, {top}
    for p in procs:
        kids.setdefault(p.get("ppid"), []).append(p["pid"])
    todo = [top]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def test_orphans_of_the_killed_holder_never_include_the_waiters_live_build():
    """Item 6, after the SIGKILL: the holder's re-parented compiler chains are an orphaned
    build (warning, opt-in terminate fix); the waiter took the lock at once and its own ninja
    compiles the same module beside them, in the same session. Recorded on the box by the
    code of that day: its pids held the waiter's ninja, so the terminate fix would have
    ended the live rank's build (diag_kill_5.json); fidoctor.proctree now keeps them apart."""
    snap, diag = replay("kill")
    live = _tree_of(snap, WAITER) - {WAITER}
    assert live and any(p["name"] == "ninja" and p["pid"] in live
                        for p in snap.data("processes")["processes"])
    stuck = of(diag, "build-process-stuck")
    [orphan] = [f for f in stuck if f.data["orphaned"]]
    assert orphan.severity == "warning" and "orphaned build" in orphan.title
    assert "terminate-build-tree" in [x.id for x in orphan.fixes]
    assert not set(orphan.data["pids"]) & live
    assert not set(orphan.data["pgids"]) & live
    [busy] = [f for f in stuck if not f.data["orphaned"]]
    assert busy.severity == "info" and not busy.fixes and set(busy.data["pids"]) <= live
    before = [x for x in doc("diag_kill_5.json")["findings"] if x["id"] == "build-process-stuck"]
    assert set(before[0]["data"]["pids"]) & live  # the bug as recorded, before the fix
    locks = (REAL / "kill0_procs.txt").read_text()   # /proc/locks 6 ms after the SIGKILL
    assert f"FLOCK  ADVISORY  WRITE {WAITER} " in locks


def test_cold_default_set_parallel_warmup_and_its_ninja_logs():
    """Item 4: `fidoctor warmup --json` of the default set, cold, module-parallel."""
    w = doc("warmup_parallel.json")
    jsonschema.validate(w, schema("warmup"))
    assert w["exit_code"] == 0 and [m["status"] for m in w["modules"]] == ["done"] * 6
    assert w["target"]["gpu"] == [9, 0]
    edges = []
    for m in w["modules"]:
        e = read_log(str(REAL / "ninja_logs" / f"{m['name']}.ninja_log"), m["name"])
        assert len(e) == (4 if m["key"].startswith("decode") else 11), m["key"]
        edges += e
    b = bounds(edges, 16)
    assert b["lower_bound_s"] <= b["list_schedule_s"] <= w["seconds"]
    fa3 = sum(x.seconds for x in edges if x.module.endswith("_sm90"))
    assert fa3 / b["work_s"] > 0.7  # FA3 is most of the work (h200-facts.md)
    seq = doc("warmup_sub_sequential.json")
    jsonschema.validate(seq, schema("warmup"))
    assert [m["status"] for m in seq["modules"]] == ["done"] * 4


def test_cache_export_import_verify_then_first_calls_load_without_compiling():
    """Item 5: the warmed workspace exported, imported into a fresh one, verified; then
    FlashInfer's own build_and_load per module found every ninja a no-op."""
    v = doc("cache_verify.json")
    jsonschema.validate(v, schema("cache-verify"))
    assert v["summary"]["ok"] == 6 and v["summary"]["exit_code"] == 0
    exported = [ln.strip() for ln in (REAL / "cache_export.txt").read_text().splitlines()[1:]]
    fc = doc("first_call.json")
    assert sorted(m["name"] for m in fc["modules"]) == sorted(exported)
    assert [m["recompiled"] for m in fc["modules"]] == [False] * 6
    assert {m["name"] for m in v["modules"]} == set(exported)


def _log_of_the_real_failure(tmp_path, with_build_line: bool) -> Path:
    """The server's stderr as it was on the H200: FlashInfer's own "Building JIT module"
    line (arch_call.err) and the traceback Python printed, whose last frames and error
    line arch_call.json kept verbatim."""
    call = doc("arch_call.json")
    lines = (REAL / "arch_call.err").read_text().splitlines()[:1] if with_build_line else []
    lines += ["Traceback (most recent call last):", *call["traceback_tail"]]
    p = tmp_path / "server.log"
    p.write_text("\n".join(lines) + "\n")
    return p


def _log_verdict(log: Path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "fidoctor", "diagnose", "--log-only", "--log",
                        str(log), "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode in (0, 1), r.stderr
    return r.returncode, json.loads(r.stdout)


@pytest.mark.parametrize("with_build_line", [True, False])
def test_the_real_launch_error_in_a_server_log_names_cache_arch_mismatch(tmp_path,
                                                                          with_build_line):
    """The words the H200 printed, with and without the build line of that run (a restart
    over the cached sm_80 module prints only the traceback)."""
    rc, out = _log_verdict(_log_of_the_real_failure(tmp_path, with_build_line))
    [f] = [x for x in out["findings"] if x["id"] == "cache-arch-mismatch"]
    assert rc == 1 and "SingleDecodeWithKVCache" in f["title"]
    assert any("no kernel image is available" in e for e in f["evidence"])


def test_the_same_cuda_words_from_torch_alone_are_not_flashinfers(tmp_path):
    """Healthy twin: torch raises the same CUDA error text for its own kernels."""
    log = tmp_path / "torch.log"
    log.write_text("Traceback (most recent call last):\n"
                   '  File "/srv/app/model.py", line 12, in forward\n'
                   "    y = torch.nn.functional.gelu(x)\n"
                   "torch.AcceleratorError: CUDA error: no kernel image is available for "
                   "execution on the device\n")
    _, out = _log_verdict(log)
    assert "cache-arch-mismatch" not in [x["id"] for x in out["findings"]]


def test_an_fa3_compile_is_not_a_live_build_of_its_fa2_twin(tmp_path, procs):
    """On the H200 the parallel warmup noted "prefill-fa2:…: live build by pid 1778 (holds the
    module lock)": pid 1778 was the warmup itself, and the "build" its own FA3 compilers,
    whose module dir starts with the FA2 dir's full path. Real processes naming each path."""
    import sys
    import time

    from fidoctor.warmup.jobs import find_builders

    notes = doc("warmup_parallel.json")["notes"]
    assert any(n.startswith("prefill-fa2:bf16:128: live build by pid") for n in notes)
    ops = tmp_path / "cached_ops"
    fa2 = ops / FA2_F16
    fa3 = ops / (FA2_F16 + "_sm90")
    sleeper = "import time; time.sleep(60)"
    p3 = procs.start([sys.executable, "-c", sleeper, "-o", f"{fa3}/batch_prefill_sm90.cuda.o"])
    deadline = time.time() + 10
    while time.time() < deadline and not find_builders([str(fa3)]):
        time.sleep(0.1)
    assert [p.pid for p in find_builders([str(fa3)])] == [p3.pid]   # its own module: found
    assert find_builders([str(fa2)]) == []                           # the FA2 twin: not
    p2 = procs.start([sys.executable, "-c", sleeper, "-C", str(fa2)])
    deadline = time.time() + 10
    while time.time() < deadline and len(find_builders([str(fa2)])) < 1:
        time.sleep(0.1)
    assert [p.pid for p in find_builders([str(fa2)])] == [p2.pid]


def test_the_race_of_orphans_and_the_waiter_left_a_module_that_rebuilds():
    """After the waiter loaded, fidoctor on the box found the module its ninja and the
    holder's orphans wrote at once out of date for ninja (recorded text)."""
    text = (REAL / "diag_after_race.txt").read_text()
    assert "WARNING  cache-rebuild-pending" in text and "stored deps info out of date" in text
    assert FA2_F16 in text


def test_healthy_says_it_is_only_so_for_what_was_judged(tmp_path):
    """The H200's fresh box replayed with its ``oom`` section gone: the probes that read it
    (build-killed, build-memory-thrash) are inconclusive, and the verdict line says "healthy"
    only for what was judged, naming them; the whole snapshot keeps the plain verdict."""
    from fidoctor.render.text import summary_line

    whole = summary_line(replay("fresh")[1])
    assert whole.endswith("— healthy"), whole
    raw = json.loads((REAL / "snap_fresh.json").read_text())
    del raw["sections"]["oom"]
    cut = tmp_path / "cut.json"
    cut.write_text(json.dumps(raw))
    diag = diagnose(Snapshot.load(str(cut)))
    line = summary_line(diag)
    assert diag.exit_code == 0
    inc = sorted({i.probe for i in diag.inconclusive})
    assert "build-killed" in inc and "build-memory-thrash" in inc, inc
    assert f"healthy for what was judged; {len(inc)} check(s) inconclusive: " in line, line
    assert all(p in line for p in inc[:5]), line
