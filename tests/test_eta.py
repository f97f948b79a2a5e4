"""The ETA table: seeds, the schedule model, and this machine's history read from a real ninja.

The history tests run the real ``ninja`` on a real ``build.ninja`` laid out as
FlashInfer lays out a module dir (absolute outputs, one ``cached_ops/<name>/``
per module), with gcc compiles that sleep a little so the edges have a
duration. ``FLASHINFER_JIT_BUILD_LOG`` records are written in FlashInfer
0.7.4's format by the test (a stand-in: the cached target venv has 0.7.2,
which does not write that log).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from fidoctor.flashinfer import eta
from tests.conftest import DECODE, FA2, FA3

BATCH_FA3 = ("batch_prefill_with_kv_cache_dtype_q_bf16_dtype_kv_bf16_dtype_o_bf16_dtype_idx_i32"
             "_head_dim_qk_128_head_dim_vo_128_posenc_0_use_swa_False_use_logits_cap_False"
             "_f16qk_False_sm90")


def ninja_build(moddir, edges=3, sleep=0.4, jobs=1):
    """A real ninja run in a FlashInfer-shaped module dir: ``edges`` objects, one link."""
    ninja = shutil.which("ninja")
    if ninja is None:
        pytest.skip("ninja not installed")
    moddir.mkdir(parents=True, exist_ok=True)
    name = moddir.name
    lines = [
        f"rule cc\n  command = gcc -c -fPIC $in -o $out && sleep {sleep}\n",
        "rule link\n  command = gcc -shared $in -o $out\n",
    ]
    objs = []
    for i in range(edges):
        src = moddir / f"k{i}.c"
        src.write_text(f"int k{i}(int x) {{ return x + {i}; }}\n")
        obj = moddir / f"{name}_k{i}.cuda.o"
        objs.append(str(obj))
        lines.append(f"build {obj}: cc {src}\n")
    lines.append(f"build {moddir / (name + '.so')}: link {' '.join(objs)}\n")
    (moddir / "build.ninja").write_text("".join(lines))
    subprocess.run([ninja, "-C", str(moddir), "-j", str(jobs)], check=True, capture_output=True)


def test_kinds_from_names_and_warmup_keys():
    assert eta.kind_of(DECODE) == "single-decode"
    assert eta.kind_of(FA2) == "single-prefill-fa2"
    assert eta.kind_of(FA3) == "single-prefill-fa3"
    assert eta.kind_of(BATCH_FA3) == "prefill-fa3"
    assert eta.kind_of("prefill-fa3:bf16:128") == "prefill-fa3"
    assert eta.kind_of("decode") == "decode"
    assert eta.kind_of("norm") == "other"


def test_schedule_shares_cores_and_respects_jobs():
    assert eta.schedule([10, 10], jobs=2, cores=2) == pytest.approx(10)
    assert eta.schedule([10, 10], jobs=2, cores=1) == pytest.approx(20)
    assert eta.schedule([10, 10, 10], jobs=1, cores=16) == pytest.approx(30)
    # ninja's own default -j: 2 for 1 core, 3 for 2, cores + 2 above
    assert [eta.jobs_for({}, c) for c in (1, 2, 16)] == [2, 3, 18]
    assert eta.jobs_for({"MAX_JOBS": "4"}, 16) == 4
    assert eta.jobs_for({"MAX_JOBS": "four"}, 16) == 18


def test_seeds_reproduce_the_measured_gpu_walls():
    """The table's own sources, played back: within 25 % of every 16-core GPU measurement."""
    for (kind, arch, cores, jobs), (wall, _src) in eta.MEASURED.items():
        if cores != 16:
            continue
        est = eta.estimate(kind, arch=arch, cores=cores, jobs=jobs)
        assert est is not None and est.basis == "seed"
        assert abs(est.seconds - wall) / wall <= 0.25, (kind, est.seconds, wall)


def test_fewer_cores_and_more_archs_take_longer_fa3_ignores_archs():
    e16 = eta.estimate("prefill-fa3", cores=16, jobs=18)
    e2 = eta.estimate("prefill-fa3", cores=2, jobs=3)
    assert e2.seconds > 4 * e16.seconds
    fa2_one = eta.estimate("prefill-fa2", arch="90a", cores=16, jobs=18)
    fa2_two = eta.estimate("prefill-fa2", arch="80_90a", cores=16, jobs=18)
    assert fa2_two.seconds > 1.8 * fa2_one.seconds and "2 archs" in fa2_two.source
    fa3_two = eta.estimate("prefill-fa3", arch="80_90a", cores=16, jobs=18)
    assert fa3_two.seconds == pytest.approx(e16.seconds)
    assert "h200-facts.md" in e16.source


def test_unknown_kind_has_no_estimate_and_remaining_never_goes_negative():
    assert eta.estimate("fused_moe_90") is None
    assert eta.remaining(None, 10.0) is None
    est = eta.estimate("decode", cores=16, jobs=16)
    assert eta.remaining(est, 1.0) == pytest.approx(est.seconds - 1.0)
    assert eta.remaining(est, est.seconds + 0.01) == 0.0       # due any moment
    assert eta.remaining(est, est.high + 1) is None             # longer than expected
    assert eta.remaining(est, 500.0, done=3, total=3) == 0.0


def test_history_from_a_real_ninja_log_refines_kind_and_module(tmp_path):
    ws = tmp_path / "ws"
    ninja_build(ws / "cached_ops" / DECODE, edges=3, sleep=0.4, jobs=1)
    log = (ws / "cached_ops" / DECODE / ".ninja_log").read_text()
    assert log.startswith("# ninja log v")
    hist = eta.History.gather([str(ws)], cores=2)
    edges = hist.kind_edges("single-decode")
    assert len(edges) == 3 and all(0.3 < e < 5 for e in edges)
    # the same module again: its own past wall (3 edges one at a time, ≥ 1.2 s)
    own = eta.estimate(DECODE, cores=2, jobs=3, history=hist)
    assert own.basis == "history-module" and 1.2 <= own.seconds < 10
    # another module of the same kind: this machine's edges, modelled for 3 jobs
    other = DECODE.replace("head_dim_qk_128_head_dim_vo_128", "head_dim_qk_64_head_dim_vo_64")
    kin = eta.estimate(other, cores=2, jobs=3, history=hist)
    assert kin.basis == "history-kind" and kin.seconds < own.seconds
    # a kind never built here: the seed, scaled by this machine's (fast, tiny) edges
    fa3 = eta.estimate(FA3, cores=2, jobs=3, history=hist)
    assert fa3.basis == "seed" and "machine's speed" in fa3.source
    assert fa3.seconds < eta.estimate(FA3, cores=2, jobs=3).seconds


def test_parallel_edges_are_counted_per_core(tmp_path):
    """Four edges at once on one core: each took ≈4× its cost; history divides that out."""
    ws = tmp_path / "ws"
    ninja_build(ws / "cached_ops" / DECODE, edges=4, sleep=0.6, jobs=4)
    hist = eta.History.gather([str(ws)], cores=1)
    edges = hist.kind_edges("single-decode")
    assert len(edges) == 4
    walls = [e for e in eta.read_ninja_log(str(ws / "cached_ops" / DECODE / ".ninja_log"))
             if not e.output.endswith(".so")]
    assert max(edges) < 0.5 * max((w.end_ms - w.start_ms) / 1000 for w in walls)


def test_build_log_json_lines_give_module_walls(tmp_path):
    """FLASHINFER_JIT_BUILD_LOG lines (0.7.4 format, written here: a stand-in)."""
    path = tmp_path / "build.jsonl"
    recs = [{"toolchain": "nvcc", "name": BATCH_FA3, "seconds": 92.0, "pid": 1, "time": 1.0},
            {"toolchain": "nvcc", "name": BATCH_FA3, "seconds": 0.004, "pid": 2, "time": 2.0},
            {"toolchain": "nvcc", "name": BATCH_FA3, "seconds": 100.0, "pid": 3, "time": 3.0}]
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\nnot json\n{\"name\": 5}\n")
    hist = eta.History.gather([], build_log=str(path), cores=16)
    est = eta.estimate(BATCH_FA3, cores=16, jobs=18, history=hist)
    assert est.basis == "history-module" and est.seconds == pytest.approx(96.0)


def test_hostile_logs_are_skipped_not_fatal(tmp_path):
    ws = tmp_path / "ws"
    mod = ws / "cached_ops" / DECODE
    mod.mkdir(parents=True)
    os.mkfifo(mod / ".ninja_log")                      # would block a plain open()
    other = ws / "cached_ops" / FA2
    other.mkdir()
    (other / ".ninja_log").write_bytes(b"# ninja log v7\n\xff\xfe\tgarbage\n1\t2\n")
    (ws / "cached_ops" / ".ninja_log").write_text("not a ninja log\n")
    hist = eta.History.gather([str(ws)], build_log=str(tmp_path / "absent.jsonl"), cores=2)
    assert hist.kind_edges("single-decode") == [] and hist.speed_factor() is None


# ---- mid-build re-estimate from ninja's own progress ----------------------------------------

REAL_LOGS = os.path.join(os.path.dirname(__file__), "fixtures", "real-h200", "ninja_logs")


def _replay(path):
    """(start, end) of each compile edge of a recorded ``.ninja_log``, the end of the build,
    and the most edges it ran at once."""
    edges = [(e.start_ms / 1000, e.end_ms / 1000) for e in eta.read_ninja_log(path)
             if not e.output.endswith(".so")]
    return edges, max(b for _, b in edges), max(sum(1 for a, b in edges if a <= t < b)
                                                for t, _ in edges)


def test_reestimate_replayed_on_the_h200_ninja_logs_brackets_the_real_end():
    """Every module of the H200's cold default-set warmup (its real ``.ninja_log`` files),
    replayed edge by edge: after each finished object, the re-estimate's floor is never past
    the real end, and its range, when it gives one, holds the real end. Where the objects still
    compiling have outrun every finished one (all started together), no end is made up."""
    logs = sorted(os.listdir(REAL_LOGS))
    assert len(logs) == 6
    said = floors = 0
    for name in logs:
        path = os.path.join(REAL_LOGS, name)
        for e in eta.read_ninja_log(path):        # the recorded paths are the H200's
            assert e.module == name[: -len(".ninja_log")]
        edges, end, jobs = _replay(path)
        for t in sorted({b for _, b in edges})[:-1]:
            t += 0.5
            fin = [b - a for a, b in edges if b <= t]
            run = [t - a for a, b in edges if a <= t < b]
            if len(fin) == len(edges):
                continue                      # two ends < 0.5 s apart: the build is over
            re = eta.reestimate(fin, run, len(edges), jobs)
            assert re is not None and re.done == len(fin) and re.total == len(edges)
            assert t + re.low <= end + 1e-6, (name, t, re)
            if re.high is None:
                floors += 1
                assert re.outrun >= 1 and re.left == re.low
            else:
                said += 1
                assert re.low <= re.left <= re.high and t + re.high >= end, (name, t, re)
            assert f"{len(fin)}/{len(edges)} objects built in this run" in re.source
    assert said >= 10 and floors >= 10          # both cases really happen on these logs


def test_reestimate_on_a_small_box_queue_holds_the_real_end():
    """The 2-core case: 6 FA3 edges, 3 at a time (ninja's default on 2 cores), with the edge
    walls measured on this box (knowledge/real-builds-on-cpu.md: 166, 166, 104, 108, 67,
    72.5 s), laid out as ninja runs them (the next edge takes the first free slot). From the
    first finished object on, with edges still queued, the range holds the real end."""
    costs = [166.0, 166.0, 104.0, 108.0, 67.0, 72.5]
    slots, edges = [0.0, 0.0, 0.0], []
    for c in costs:
        i = min(range(3), key=lambda k: slots[k])
        edges.append((slots[i], slots[i] + c))
        slots[i] += c
    end = max(b for _, b in edges)
    checked = 0
    for t in sorted({b for _, b in edges})[:-1]:
        t += 0.5
        fin = [b - a for a, b in edges if b <= t]
        run = [t - a for a, b in edges if a <= t < b]
        re = eta.reestimate(fin, run, len(edges), 3)
        assert re is not None and t + re.low <= end, (t, re)
        if re.high is not None:
            checked += 1
            assert end <= t + re.high, (t, re)
    assert checked >= 2
    first = min(b for _, b in edges) + 0.5
    re = eta.reestimate([104.0], [first - 0, first - 0], 6, 3)
    assert re is not None and re.outrun == 2 and re.high is None     # no end is made up
    assert re.low >= 3 * 104.0 * eta.LOW_EDGE / 3                     # 3 queued: a real floor
    assert eta.reestimate([], [5.0, 5.0], 6, 3) is None               # nothing finished yet
