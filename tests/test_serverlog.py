"""``fidoctor diagnose --log``: real FlashInfer failures read back from real server output.

Each log comes from a real Python process of the cached target venv (see
``serverlog_helpers``): FlashInfer's own build path failing for a real reason,
then re-printed the way vLLM, SGLang, Ray, torchrun and kubectl print a
child's lines. Each id has its firing case; the quiet cases are real logs of
failures that have nothing to do with the JIT and of a healthy slow compile.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FA2, run_cli
from serverlog_helpers import (
    capture,
    hard_wrap,
    interleave,
    kubectl,
    line_of,
    plain,
    ray_worker,
    sglang_rank,
    torch_rank,
    vllm_worker,
    write_log,
)

from fidoctor.serverlog import Scanner, analyse

pytestmark = pytest.mark.timeout(900)


def findings(*paths: Path, **kw):
    d = analyse([str(p) for p in paths], **kw)
    return {f["id"]: f for f in d["findings"]}, d


def problems(found):
    return {i for i, f in found.items() if f["severity"] in ("error", "warning")}


def evidence_has(f, path: Path, line: int, needle: str) -> bool:
    return any(e.startswith(f"{path}:{line}: ") and needle in e for e in f["evidence"])


# -- the causes, from real failures ---------------------------------------------------------

def test_missing_libcuda_names_the_toolkit_with_file_line_and_quote(tmp_path):
    lines = plain(capture("lcuda"))
    log = write_log(tmp_path / "server.log", lines)
    found, _ = findings(log)
    assert problems(found) == {"cuda-toolkit-unusable"}  # the generic "build failed" is dropped
    f = found["cuda-toolkit-unusable"]
    assert f["severity"] == "error" and "-lcuda" in f["title"]
    assert evidence_has(f, log, line_of(lines, "cannot find -lcuda"), "cannot find -lcuda")
    assert f["data"]["module"] == "fidoctor_tiny_link"


def test_missing_header_names_the_header(tmp_path):
    lines = plain(capture("header"))
    found, _ = findings(write_log(tmp_path / "h.log", lines))
    assert problems(found) == {"cuda-toolkit-unusable"}
    assert "curand_kernel.h" in found["cuda-toolkit-unusable"]["title"]
    assert found["cuda-toolkit-unusable"]["data"]["module"].endswith("_sm90")


def test_read_only_cache_is_cache_not_writable(tmp_path):
    lines = plain(capture("readonly"))
    log = write_log(tmp_path / "ro.log", lines)
    found, _ = findings(log)
    assert problems(found) == {"cache-not-writable"}
    f = found["cache-not-writable"]
    assert "read-only" in f["title"]
    assert evidence_has(f, log, line_of(lines, "[Errno 30]"), "Read-only file system")


def test_killed_compiler_is_build_killed(tmp_path):
    lines = plain(capture("killed"))
    assert any("[code=137]" in t for t in lines), "the capture must show the real SIGKILL"
    found, _ = findings(write_log(tmp_path / "k.log", lines))
    assert problems(found) == {"build-killed"}


def test_undefined_symbol_from_the_real_loader_is_the_first_exception_of_the_chain(tmp_path):
    lines = plain(capture("undefined"))
    assert any("The above exception was the direct cause" in t for t in lines)
    log = write_log(tmp_path / "u.log", lines)
    found, _ = findings(log)
    assert problems(found) == {"cudart-missing-symbol"}
    f = found["cudart-missing-symbol"]
    assert "cudaGetDriverEntryPointByVersion" in f["title"] and "libcudart.so.12" in f["title"]
    assert evidence_has(f, log, line_of(lines, "undefined symbol"), "undefined symbol")


def test_py_spy_dump_of_a_real_lock_waiter_is_build_lock_held(tmp_path):
    lines = plain(capture("pyspy"))
    assert any("filelock" in t for t in lines), lines
    found, _ = findings(write_log(tmp_path / "dump.txt", lines))
    assert problems(found) == {"build-lock-held"}
    assert found["build-lock-held"]["severity"] == "warning"


# -- the serving stacks' wrappers --------------------------------------------------------------

def test_vllm_worker_prefixes_ansi_and_crlf_records(tmp_path):
    lines = vllm_worker(capture("lcuda"))
    log = write_log(tmp_path / "vllm.log", lines, ansi=True)
    found, d = findings(log)
    assert problems(found) == {"cuda-toolkit-unusable"}
    f = found["cuda-toolkit-unusable"]
    assert evidence_has(f, log, line_of(lines, "cannot find -lcuda"), "cannot find -lcuda")
    assert "\x1b" not in " ".join(f["evidence"])
    assert f["data"]["streams"] == ["Worker_TP0 pid=451"]


def test_four_vllm_workers_interleaved_make_one_finding_naming_every_stream(tmp_path):
    real = capture("header")
    ranks = [vllm_worker(real, worker=f"Worker_TP{i}", pid=450 + i) for i in range(4)]
    lines = interleave(ranks, chunk=3)
    found, _ = findings(write_log(tmp_path / "tp4.log", lines))
    assert problems(found) == {"cuda-toolkit-unusable"}
    f = found["cuda-toolkit-unusable"]
    assert len(f["data"]["streams"]) == 4
    assert any("from 4 streams" in e for e in f["evidence"])


def test_torchrun_ranks_interleaved_and_kubectl_timestamps(tmp_path):
    real = capture("killed")
    ranks = [torch_rank(real, r) for r in range(2)]
    lines = interleave(ranks, chunk=1)
    stamped = kubectl([x for pair in zip(real, real) for x in pair], lines)
    found, _ = findings(write_log(tmp_path / "k8s.log", stamped))
    assert problems(found) == {"build-killed"}
    assert set(found["build-killed"]["data"]["streams"]) == {"rank0", "rank1"}


def test_sglang_scheduler_record_and_gzip(tmp_path):
    lines = sglang_rank(capture("undefined"), " DP0 TP1")
    log = write_log(tmp_path / "sglang.log.gz", lines, gz=True)
    found, d = findings(log)
    assert problems(found) == {"cudart-missing-symbol"}
    assert d["files"][0]["gzip"] is True


def test_ray_prefix_and_dedup_suffix(tmp_path):
    lines = ray_worker(vllm_worker(capture("readonly")))
    found, _ = findings(write_log(tmp_path / "ray.log", lines))
    assert problems(found) == {"cache-not-writable"}
    assert "repeated" not in found["cache-not-writable"]["title"]


def test_lines_wrapped_by_the_terminal_are_rejoined(tmp_path):
    lines = hard_wrap(vllm_worker(capture("lcuda")), width=100)
    assert not any("cannot find -lcuda" in t for t in lines), "the wrap must split the message"
    found, _ = findings(write_log(tmp_path / "wrapped.log", lines))
    assert problems(found) == {"cuda-toolkit-unusable"}


# -- quiet cases -----------------------------------------------------------------------------

def test_inference_oom_mentioning_flashinfer_is_no_jit_activity(tmp_path):
    lines = plain(capture("oom"))
    assert any("flashinfer" in t for t in lines) and any("allocate" in t for t in lines)
    found, _ = findings(write_log(tmp_path / "oom.log", vllm_worker(capture("oom"))))
    assert problems(found) == set()
    assert found["log-no-jit-activity"]["severity"] == "info"


def test_slow_healthy_compile_is_info_with_its_duration(tmp_path):
    real = capture("slow")
    assert any(t.startswith("loaded OK") for _, t in real), real[-3:]
    found, _ = findings(write_log(tmp_path / "slow.log", vllm_worker(real)))
    assert problems(found) == set()
    f = found["jit-build-slow"]
    assert f["severity"] == "info" and f["data"]["seconds"] >= 20 and "not a hang" in f["title"]


def test_unrelated_nccl_style_error_after_a_healthy_build_raises_nothing(tmp_path):
    """A real healthy build followed by a real torch.distributed (gloo) connection failure."""
    code = ("import datetime, torch.distributed as d\n"
            "d.init_process_group('gloo', init_method='tcp://127.0.0.1:1', rank=0, world_size=2,"
            " timeout=datetime.timedelta(seconds=2))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    if "No module named 'torch'" in r.stderr:
        from warmup_helpers import target_venv

        r = subprocess.run([str(target_venv()), "-c", code], capture_output=True, text=True,
                           timeout=120)
    assert r.returncode != 0
    lines = vllm_worker(capture("slow")) + [f"(Worker_TP0 pid=451) {x}"
                                            for x in r.stderr.splitlines()]
    found, _ = findings(write_log(tmp_path / "dist.log", lines))
    assert problems(found) == set(), found.keys()


# -- the scanner API the live watch uses ---------------------------------------------------------

def test_scanner_feed_returns_hits_per_line_as_they_pass():
    sc = Scanner("live")
    hits = []
    for n, raw in enumerate(vllm_worker(capture("lcuda")), 1):
        for h in sc.feed(raw + "\n"):
            hits.append((n, h))
    ids = {h.id for _, h in hits}
    assert "cuda-toolkit-unusable" in ids
    n, h = next(x for x in hits if x[1].id == "cuda-toolkit-unusable")
    assert h.line == n and h.anchored and h.stream == "Worker_TP0 pid=451"
    result = sc.close()
    assert result["anchor"]["kind"] and result["lines"] == n + (result["lines"] - n)


# -- the command ---------------------------------------------------------------------------------

def test_cli_log_only_exit_codes_json_and_stdin(tmp_path):
    log = write_log(tmp_path / "s.log", plain(capture("lcuda")))
    r = run_cli(["diagnose", "--log-only", "--log", str(log), "--json"])
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    import jsonschema

    schema = json.loads((Path(__file__).parent.parent / "fidoctor" / "schema" /
                         "diagnose.schema.json").read_text())
    jsonschema.validate(out, schema)
    assert [f["id"] for f in out["findings"]] == ["cuda-toolkit-unusable"]
    oom = "\n".join(plain(capture("oom"))) + "\n"
    r = run_cli(["diagnose", "--log-only", "--log", "-"], input_text=oom)
    assert r.returncode == 0 and "no FlashInfer JIT activity in this log" in r.stdout


@pytest.mark.parametrize("args,needle", [
    (["--log-only"], "needs at least one --log"),
    (["--log-only", "--log", "/nonexistent/x.log"], "no such file"),
    (["--log-only", "--log", "/dev/zero"], "not a regular file"),
    (["--log-only", "--log", "-", "--log", "-"], "only once"),
])
def test_cli_bad_log_input_is_one_line_exit_2(args, needle):
    r = run_cli(["diagnose", *args], input_text="")
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr


def test_budget_stops_reading_and_says_so(tmp_path):
    log = write_log(tmp_path / "big.log", plain(capture("lcuda")) * 50)
    d = analyse([str(log)], max_bytes=4096)
    f = d["files"][0]
    assert f["complete"] is False and "size budget" in f["stopped"]


def test_truncated_gzip_keeps_what_was_read(tmp_path):
    body = gzip.compress(("\n".join(plain(capture("lcuda"))) + "\n").encode())
    p = tmp_path / "cut.log.gz"
    p.write_bytes(body[: len(body) * 2 // 3])
    d = analyse([str(p)])
    assert d["files"][0]["complete"] is False


def test_log_and_machine_findings_about_one_module_merge(box, tmp_path):
    """The machine's truncated .so and the real loader's words about it: one finding."""
    ws = box.workspace()
    mod = box.module(ws, FA2, so="truncated")
    so = next(mod.glob("*.so"))
    r = subprocess.run([sys.executable, "-c", "import ctypes, sys; ctypes.CDLL(sys.argv[1])",
                        str(so)], capture_output=True, text=True)
    assert "cannot read file data" in r.stderr or "file too short" in r.stderr, r.stderr
    log = write_log(tmp_path / "server.log", r.stderr.splitlines())
    res = run_cli(["diagnose", "--json", "--log", str(log)], env=box.env())
    out = json.loads(res.stdout)
    same = [f for f in out["findings"] if f["id"] == "cache-incomplete-module"]
    assert len(same) == 1, [f["id"] for f in out["findings"]]
    assert same[0]["data"]["sources"] == ["machine", "log"]
    assert any(e.startswith("server log ") and str(log) in e for e in same[0]["evidence"])


@pytest.mark.parametrize("name,wrap", [("lcuda", False), ("header", True), ("killed", False)])
def test_block_reader_sees_what_line_by_line_feeding_sees(tmp_path, name, wrap):
    """The file reader's fast path (only lines with trigger words get the full treatment)
    must find exactly what the per-line API finds."""
    lines = vllm_worker(capture(name))
    if wrap:
        lines = hard_wrap(lines, width=100)
    log = write_log(tmp_path / "x.log", lines)
    sc = Scanner(str(log))
    for ln in lines:
        sc.feed(ln)
    slow = sc.close()
    fast = analyse([str(log)])["files"][0]
    key = [(h["id"], h["line"], h["quote"]) for h in slow["hits"]]
    assert key and key == [(h["id"], h["line"], h["quote"]) for h in fast["hits"]]
    assert slow["lines"] == fast["lines"] == len(lines)


def test_binary_garbage_without_newlines_keeps_memory_flat_and_finds_the_cause(tmp_path):
    lines = plain(capture("lcuda"))
    p = tmp_path / "garbage.log"
    with open(p, "wb") as f:
        f.write(bytes(range(256)).replace(b"\n", b"") * 16384)  # 4 MB, no newline
        f.write(b"\n" + "\n".join(lines).encode() + b"\n")
    found, d = findings(p)
    assert problems(found) == {"cuda-toolkit-unusable"}
    assert d["files"][0]["lines"] == len(lines) + 1


def test_consequence_in_a_chain_is_info_caused_by_the_first_exception(tmp_path):
    """Two real tracebacks joined as Python chains them: the read-only cache error first,
    then, 'during handling', the real ninja failure. The first is the cause; the later
    one is reported as its consequence."""
    first = plain(capture("readonly"))
    second = plain(capture("lcuda"))
    tb = next(i for i, t in enumerate(second) if t.startswith("Traceback"))
    lines = first + ["", "During handling of the above exception, another exception occurred:",
                     ""] + second[tb:]
    found, _ = findings(write_log(tmp_path / "chain.log", lines))
    assert found["cache-not-writable"]["severity"] == "error"
    assert found["cuda-toolkit-unusable"]["severity"] == "info"
    assert found["cuda-toolkit-unusable"]["caused_by"] == "cache-not-writable"


def test_pane_border_wrapped_lines_are_rejoined(tmp_path):
    """A tmux/terminal pane: each row ends in a border at a fixed width, the message goes
    on in the next row (as pasted in FlashInfer#1657)."""
    lines = []
    for ln in vllm_worker(capture("lcuda")):
        while len(ln) > 90:
            lines.append(ln[:90] + "│")
            ln = ln[90:]
        lines.append(ln)
    assert not any("cannot find -lcuda" in t for t in lines)
    found, _ = findings(write_log(tmp_path / "pane.log", lines))
    assert problems(found) == {"cuda-toolkit-unusable"}


def test_jit_build_log_of_the_target_is_gathered_into_durations(tmp_path):
    """FLASHINFER_JIT_BUILD_LOG records, in the exact shape FlashInfer 0.7.4's
    ``_record_jit_build`` writes them (this box runs 0.7.2, which has no such log)."""
    from fidoctor.flashinfer.buildlog import durations
    from fidoctor.snapshot.context import build_context
    from fidoctor.snapshot.runner import gather_snapshot

    log = tmp_path / "builds.jsonl"
    recs = [{"toolchain": "nvcc", "name": "single_decode_x", "seconds": 25.614, "pid": 11,
             "time": 1.0},
            {"toolchain": "nvcc", "name": "single_decode_x", "seconds": 0.012, "pid": 12,
             "time": 2.0},
            {"toolchain": "nvcc", "name": "fa3_y", "seconds": 346.2, "pid": 12, "time": 3.0}]
    log.write_text("".join(json.dumps(r) + "\n" for r in recs) + "not json\n")
    env = dict(__import__("os").environ, FLASHINFER_JIT_BUILD_LOG=str(log),
               FLASHINFER_WORKSPACE_BASE=str(tmp_path))
    snap = gather_snapshot(build_context(env=env), only=["jit_build_log"], inline=True)
    data = snap.data("jit_build_log")
    assert data["records"] == 3 and data["bad_lines"] == 1
    assert data["modules"]["single_decode_x"]["noop_builds"] == 1
    assert durations(snap) == {"single_decode_x": [25.614], "fa3_y": [346.2]}


def test_report_has_the_log_lines_that_matter_and_collect_env(tmp_path):
    from warmup_helpers import target_venv

    py = target_venv()
    lines = plain(capture("killed"))
    log = write_log(tmp_path / "server.log", lines)
    out = tmp_path / "r.md"
    env = dict(__import__("os").environ, FLASHINFER_WORKSPACE_BASE=str(tmp_path / "ws"),
               XDG_CACHE_HOME=str(tmp_path / "xdg"))
    r = run_cli(["report", "--python", str(py), "--log", str(log), "-o", str(out)], env=env,
                timeout=300)
    assert r.returncode == 0, r.stderr
    md = out.read_text()
    n = line_of(lines, "[code=137]")
    assert f"{n:>7}  FAILED: [code=137]" in md and "# build-killed" in md
    assert "flashinfer collect-env --json" in md and '"FlashInfer"' in md


@pytest.mark.parametrize("name,expect,needle", [
    ("flag11", "nvcc-flag-unsupported", "--compress-mode=size"),
    ("gcc12", "host-compiler-unsupported", "gcc versions later than 11"),
    ("arch90a", "nvcc-arch-unsupported", "compute_90a"),
])
def test_old_toolkit_failures_from_nvcc_11_8(tmp_path, name, expect, needle):
    """NVIDIA's real CUDA 11.8 nvcc (Debian's nvidia-cuda-toolkit): FlashInfer 0.7.2's flag
    it lacks, this box's gcc 12 it rejects, compute_90a it does not know."""
    lines = sglang_rank(capture(name), " TP0")
    log = write_log(tmp_path / f"{name}.log", lines)
    found, _ = findings(log)
    assert problems(found) == {expect}
    assert needle in found[expect]["title"] or any(needle in e for e in found[expect]["evidence"])


def test_from_snapshot_with_a_log_and_log_only(box, tmp_path):
    """A maintainer's view: someone's snapshot plus their server log; or their log alone."""
    ws = box.workspace()
    box.module(ws, FA2, so="truncated")
    snap = tmp_path / "their.snapshot.json"
    r = run_cli(["snapshot", "-o", str(snap)], env=box.env())
    assert r.returncode == 0, r.stderr
    log = write_log(tmp_path / "their.log.gz", plain(capture("header")), gz=True)
    both = json.loads(run_cli(["diagnose", "--from", str(snap), "--log", str(log), "--json"]).stdout)
    ids = {f["id"] for f in both["findings"]}
    assert {"cache-incomplete-module", "cuda-toolkit-unusable"} <= ids
    only = json.loads(run_cli(["diagnose", "--from", str(snap), "--log", str(log), "--log-only",
                               "--json"]).stdout)
    assert {f["id"] for f in only["findings"]} == {"cuda-toolkit-unusable"}
    assert only["target"]["python"] == both["target"]["python"]


def test_failed_build_without_a_known_cause_quotes_the_compiler_error(tmp_path):
    lines = vllm_worker(capture("syntax"))
    log = write_log(tmp_path / "syntax.log", lines)
    found, _ = findings(log)
    assert problems(found) == {"jit-build-failed"}
    n = line_of(lines, "undeclared_in_fidoctor_test\" is undefined")
    assert any(e.startswith(f"{log}:{n}: ") for e in found["jit-build-failed"]["evidence"])


def test_stdin_that_stays_open_stops_at_the_time_budget(tmp_path):
    """``kubectl logs -f | fidoctor diagnose --log -``: the pipe never closes; the scan stops
    at --log-timeout, judges what it read and says the rest was not checked."""
    body = ("\n".join(plain(capture("lcuda"))) + "\n").encode()
    r, w = os.pipe()
    os.write(w, body)  # the log so far; the write end stays open, as kubectl logs -f keeps it
    try:
        p = subprocess.Popen([sys.executable, "-m", "fidoctor", "diagnose", "--log-only", "--log",
                              "-", "--log-timeout", "2", "--json"], stdin=r,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    finally:
        os.close(r)
        os.close(w)
    d = json.loads(out)
    assert p.returncode == 1, err
    assert [f["id"] for f in d["findings"]] == ["cuda-toolkit-unusable"]
    assert any("input still open" in i["reason"] for i in d["inconclusive"]), d["inconclusive"]


def test_stdin_that_stays_open_and_silent_stops_at_the_time_budget(tmp_path):
    """The same, for a pod that has printed nothing yet: before, the gzip sniff (the first
    read) hit the budget and died in an "internal error: TimeoutError" (exit 2, "a fidoctor
    bug"), and once past that it said "healthy" (exit 0) for a log it never read. Now: exit 2,
    not checked, and why."""
    r, w = os.pipe()  # the write end stays open and silent
    try:
        p = subprocess.run([sys.executable, "-m", "fidoctor", "diagnose", "--log-only", "--log",
                            "-", "--log-timeout", "1", "--json"], stdin=r,
                           capture_output=True, text=True, timeout=60)
    finally:
        os.close(r)
        os.close(w)
    assert "internal error" not in p.stderr and "Traceback" not in p.stderr, p.stderr
    d = json.loads(p.stdout)
    assert p.returncode == 2, p.stderr  # nothing read: never "healthy" (it was exit 0 then)
    assert d["summary"]["verdict"].startswith("not checked: no log was read"), d["summary"]
    assert any("input still open" in i["reason"] for i in d["inconclusive"]), d["inconclusive"]


def test_stdin_that_is_a_terminal_is_refused_not_waited_on():
    import pty

    master, slave = pty.openpty()
    try:
        r = subprocess.run([sys.executable, "-m", "fidoctor", "diagnose", "--log-only", "--log",
                            "-"], stdin=slave, capture_output=True, text=True, timeout=60)
    finally:
        os.close(master)
        os.close(slave)
    assert r.returncode == 2 and "stdin is a terminal" in r.stderr, r.stderr


def test_log_only_report_says_no_machine_was_looked_at(tmp_path):
    """``report --log-only``: a real captured log (a SIGKILLed build) and no machine. Before:
    the verdict ended "Target: the target interpreter (no torch/flashinfer found) at `None`",
    as if an interpreter had been examined and found empty."""
    log = write_log(tmp_path / "server.log", plain(capture("killed")))
    r = run_cli(["report", "--log-only", "--log", str(log)])
    assert r.returncode == 0, r.stderr
    assert "Target: this machine was not looked at (--log-only" in r.stdout
    assert "`None`" not in r.stdout and "no torch/flashinfer found" not in r.stdout
