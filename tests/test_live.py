"""fidoctor run / watch without FlashInfer: real processes, real ninja, real signals.

The server here is a small real program (sh or Python) — what is under test is the
passthrough (streams, signals, exit code, surviving our death), the deadline reading,
the fatal-line recognition, and the observer on a real ninja whose compile step blocks on a
FIFO (a hung compile; ``proc_helpers.fakecc`` is a gcc-built stand-in for nvcc). The real
FlashInfer cases are in test_live_real.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
from proc_helpers import write_module

from fidoctor.kill import terminate_tree
from fidoctor.live import deadlines as dl
from fidoctor.live.stream import LineWatch
from tests.conftest import DECODE
from tests.live_helpers import events_of, fidoctor_argv


def valid(events):
    """Every event line against fidoctor/schema/events.schema.json; returns them."""
    from importlib import resources

    import jsonschema

    schema = json.loads(resources.files("fidoctor").joinpath("schema/events.schema.json")
                        .read_text())
    for e in events:
        jsonschema.validate(e, schema)
    return events


def run(args, timeout=60, **kw):
    return subprocess.run(fidoctor_argv(*args), capture_output=True, text=True,
                          timeout=timeout, **kw)


# ---- deadlines -----------------------------------------------------------------------------

def test_vllm_and_sglang_clocks_from_argv_and_env():
    v = dl.deadlines(["vllm", "serve", "m", "--tensor-parallel-size", "2"], {})
    assert [(d.setting, d.seconds, d.clock) for d in v] == [
        ("VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS", 300.0, "step"),
        ("VLLM_ENGINE_READY_TIMEOUT_S", 600.0, "start")]
    v = dl.deadlines(["/opt/venv/bin/python3", "-m", "vllm.entrypoints.openai.api_server"],
                     {"VLLM_ENGINE_READY_TIMEOUT_S": "1200"})
    assert [(d.setting, d.seconds) for d in v] == [("VLLM_ENGINE_READY_TIMEOUT_S", 1200.0)]
    s = dl.deadlines(["python", "-m", "sglang.launch_server", "--watchdog-timeout=900"], {},
                     [(450.0, "startupProbe")])
    assert [(d.stack, d.seconds) for d in s] == [("yours", 450.0), ("SGLang", 600.0),
                                                  ("SGLang", 900.0)]
    assert dl.deadlines(["python", "-m", "sglang.launch_server", "--skip-server-warmup"],
                        {})[0].setting == "--watchdog-timeout"
    assert dl.deadlines(["python", "server.py"], {}) == []


def test_first_overrun_start_clock_counts_from_server_start():
    ready = dl.deadlines(["vllm", "serve", "m"], {})          # 600 s from the server's start
    assert dl.first_overrun(ready, build_start=100, server_start=0, eta_total=400) is None
    d, left = dl.first_overrun(ready, build_start=300, server_start=0, eta_total=400)
    assert d.setting == "VLLM_ENGINE_READY_TIMEOUT_S" and left == 300
    # the server got past its start clock long ago: a request-time build is not its business
    assert dl.first_overrun(ready, build_start=2000, server_start=0, eta_total=4000) is None
    wd = dl.deadlines(["python", "-m", "sglang.launch_server"], {})
    d, left = dl.first_overrun(wd, build_start=5000, server_start=0, eta_total=350)
    assert d.setting == "--watchdog-timeout" and left == 300


def test_bad_deadline_is_a_clear_error():
    for bad in ("soon", "nan", "inf", "1e400"):
        r = run(["run", "--deadline", bad, "--", "true"])
        assert r.returncode == 2 and "expected SECONDS[=LABEL]" in r.stderr, (bad, r.stderr)
        assert "Traceback" not in r.stderr


@pytest.mark.parametrize("env, argv", [
    ({"VLLM_ENGINE_READY_TIMEOUT_S": "nan"}, []),
    ({"VLLM_ENGINE_READY_TIMEOUT_S": "inf"}, []),
    ({"VLLM_ENGINE_READY_TIMEOUT_S": "600", "VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS": "1e400"}, []),
    ({}, ["-m", "sglang.launch_server", "--watchdog-timeout", "inf"]),
])
def test_a_clock_that_is_no_number_never_crashes_the_watch_of_a_started_server(tmp_path, env, argv):
    """A vLLM/SGLang timeout of nan/inf in the server's environment or argv: run died in
    int(nan) ('internal error', exit 2) after the server had started; the server ran on in its
    own session and its exit code was lost (found by QA). Now the clock is not a clock, and
    the server's code comes back."""
    ev = tmp_path / "ev.jsonl"
    r = run(["run", "--events", str(ev), "--", sys.executable, "-c",
             "import sys; sys.exit(3)", *argv], env=dict(os.environ, **env))
    assert r.returncode == 3, r.stderr
    assert "internal error" not in r.stderr
    start = valid(events_of(ev))[0]
    assert all(d["seconds"] < 1e9 for d in start["deadlines"]), start


# ---- fatal lines in the stream -------------------------------------------------------------

def test_fatal_lines_recognised_and_ordinary_lines_not():
    """serverlog's matchers on the passing stream, cut into lines here (partial lines wait)."""
    w = LineWatch()
    hits = w.feed("stderr", b"INFO 11-29 loading weights\n"
                  b"RuntimeError: Ninja build failed. Ninja output:\n"
                  b"OSError: /c/cached_ops/x/x.so: undefined symbol: "
                  b"cudaGetDriverEntryPointByVersion, version libcudart.so.12\n"
                  b"nvcc fatal   : Unsupported gpu architecture 'compute_90a'\n"
                  b"/ws/cached_ops/m/a.cu:1:10: fatal error: curand_kernel.h: No such file")
    assert [h.kind for h in hits] == ["jit-build-failed", "cudart-missing-symbol",
                                      "nvcc-arch-unsupported"]
    assert [h.kind for h in w.flush()] == ["cuda-toolkit-unusable"]  # the partial line at EOF
    assert w.feed("stdout", b"flashinfer.jit: Building JIT module x; this can take\n") == []
    assert w.feed("stdout", b"ERROR: CUDA out of memory while serving a request\n") == []


# ---- passthrough ---------------------------------------------------------------------------

def test_streams_stdin_and_exit_code_pass_through(tmp_path):
    r = run(["run", "--events", str(tmp_path / "ev.jsonl"), "--", "sh", "-c",
             "read x; echo \"out:$x\"; echo err >&2; exit 7"], input="hello\n")
    assert r.returncode == 7
    assert r.stdout == "out:hello\n"
    assert r.stderr == "err\n"                                # quiet when nothing compiles
    ev = valid(events_of(tmp_path / "ev.jsonl"))
    assert [e["event"] for e in ev] == ["start", "exit"] and ev[-1]["code"] == 7
    assert ev[0]["tapped"] == ["stderr", "stdout"]


def test_killed_by_a_signal_is_128_plus_n_and_bad_commands_exit_2():
    r = run(["run", "--", "sh", "-c", "kill -TERM $$"])
    assert r.returncode == 128 + signal.SIGTERM
    r = run(["run", "--", "/nonexistent/server"])
    assert r.returncode == 2 and "cannot start /nonexistent/server" in r.stderr
    r = run(["run"])
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_events_fifo_without_a_reader_is_refused_not_waited_on(tmp_path):
    """``--events FIFO`` with nobody reading blocked the open forever, before the server
    started (no output, no budget). Now: exit 2, one line. A FIFO that someone reads still
    gets every event, and a block device is never written to."""
    fifo = tmp_path / "ev.fifo"
    os.mkfifo(fifo)
    r = run(["run", "--events", str(fifo), "--", "true"], timeout=30)
    assert r.returncode == 2 and "no reader" in r.stderr and "Traceback" not in r.stderr
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader; the events fit the buffer
    try:
        r = run(["run", "--events", str(fifo), "--", "sh", "-c", "exit 3"], timeout=30)
        got = os.read(rfd, 1 << 16).decode().splitlines()
    finally:
        os.close(rfd)
    assert r.returncode == 3, r.stderr
    assert [json.loads(x)["event"] for x in got] == ["start", "exit"]
    blk = tmp_path / "blk"
    os.mknod(blk, 0o600 | __import__("stat").S_IFBLK, os.makedev(7, 250))
    r = run(["run", "--events", str(blk), "--", "true"], timeout=30)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr


CHILD = """
import signal, sys, time
def on(sig, frame):
    print(f"child: got signal {sig}", flush=True)
    sys.exit(100 + sig)
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, on)
print("child: ready", flush=True)
for i in range(int(sys.argv[1])):
    print(f"child: tick {i}", flush=True)
    time.sleep(0.2)
open(sys.argv[2], "w").write("finished")
"""


def start_watched(tmp_path, ticks=300, out=None):
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    out = out or open(tmp_path / "out.txt", "wb")  # noqa: SIM115 - closed by the caller
    p = subprocess.Popen(fidoctor_argv("run", "--events", str(tmp_path / "ev.jsonl"), "--",
                                       sys.executable, str(child), str(ticks),
                                       str(tmp_path / "done")),
                         stdout=out, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 30
    while b"child: ready" not in (tmp_path / "out.txt").read_bytes():
        assert time.time() < deadline and p.poll() is None
        time.sleep(0.05)
    server = events_of(tmp_path / "ev.jsonl")[0]["pid"]
    return p, server, out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signals_are_forwarded_and_the_code_comes_back(tmp_path, sig):
    p, server, out = start_watched(tmp_path)
    try:
        os.kill(p.pid, sig)
        assert p.wait(timeout=20) == 100 + sig
    finally:
        out.close()
    assert f"child: got signal {int(sig)}" in (tmp_path / "out.txt").read_text()
    assert not psutil.pid_exists(server) or psutil.Process(server).status() == "zombie"
    assert events_of(tmp_path / "ev.jsonl")[-1]["signals_forwarded"] == [int(sig)]


def test_server_outlives_fidoctor_and_keeps_its_output(tmp_path):
    """SIGKILL fidoctor mid-run: the server goes on, its output still reaches the file."""
    p, server, out = start_watched(tmp_path, ticks=15)
    try:
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
        deadline = time.time() + 30
        while not (tmp_path / "done").exists():
            assert time.time() < deadline, "the server died with fidoctor"
            time.sleep(0.1)
        time.sleep(0.5)  # the tap forwards the last lines, then sees EOF and exits
    finally:
        out.close()
        if psutil.pid_exists(server):
            os.kill(server, signal.SIGKILL)
    text = (tmp_path / "out.txt").read_text()
    assert "child: tick 14" in text and text.count("child: tick") == 15


# ---- the observer on a real ninja (a compile that blocks on a FIFO) --------------------------

def hung_build(tmp_path, procs):
    """A stand-in server: Python → real ninja → fakecc ``nvcc`` blocked reading a FIFO."""
    ws = tmp_path / "base" / ".cache" / "flashinfer" / "0.7.2.post1" / "90a"
    fifo = tmp_path / "hang.fifo"
    os.mkfifo(fifo)
    write_module(ws, DECODE, f"--fifo {fifo}")
    server = tmp_path / "server.py"
    server.write_text("import subprocess, sys\n"
                      f"subprocess.run(['/usr/bin/ninja', '-C', {str(ws / 'cached_ops' / DECODE)!r}])\n"
                      "import time; time.sleep(600)\n")
    env = dict(os.environ, FLASHINFER_WORKSPACE_BASE=str(tmp_path / "base"))
    p = procs.start([sys.executable, str(server)], env=env)
    procs.find("nvcc")
    return p, ws


def test_watch_once_says_building_then_stalled_across_runs(tmp_path, procs):
    p, _ws = hung_build(tmp_path, procs)
    state = tmp_path / "state.json"
    args = ["watch", "--pid", str(p.pid), "--once", "--state", str(state), "--stall-after", "2"]
    r = run(args)
    assert r.returncode == 0 and "status: building single_decode (f16, hd128)" in r.stderr, r.stderr
    assert json.loads(state.read_text())["builds"]
    time.sleep(2.5)
    r = run(args)
    assert r.returncode == 1 and "status: STALLED: single_decode (f16, hd128)" in r.stderr, r.stderr


def test_watch_once_idle_server_is_0_and_a_missing_pid_is_2(tmp_path, procs):
    p = procs.start([sys.executable, "-c", "import time; time.sleep(60)"])
    r = run(["watch", "--pid", str(p.pid), "--once", "--state", str(tmp_path / "s.json")])
    assert r.returncode == 0 and "status: not compiling" in r.stderr
    r = run(["watch", "--pid", "999999999", "--once", "--state", str(tmp_path / "s.json")])
    assert r.returncode == 2 and "could not tell" in r.stderr
    r = run(["watch", "--pid", "nope"])
    assert r.returncode == 2 and "not a process id" in r.stderr


def test_watch_once_state_that_is_a_fifo_is_not_waited_on_nor_replaced(tmp_path, procs):
    """``--state FIFO`` (a Kubernetes probe's path mistyped onto a pipe): the plain open
    blocked forever, past every probe's timeout; the save would then have replaced the FIFO
    with a regular file. Now it is read and written only as a regular file."""
    import stat

    p = procs.start([sys.executable, "-c", "import time; time.sleep(60)"])
    fifo = tmp_path / "state.fifo"
    os.mkfifo(fifo)
    r = run(["watch", "--pid", str(p.pid), "--once", "--state", str(fifo)], timeout=30)
    assert r.returncode == 0 and "status: not compiling" in r.stderr, r.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_stall_report_never_replaces_a_fifo_or_a_symlink(tmp_path):
    """``--report`` was written through a temp file + os.replace: a FIFO or a symlink named
    as the report (``--report /dev/stderr``) was swapped for a regular file. Now refused, and
    the stall handler reports it as a write failure (an OSError or fidoctor's error)."""
    from fidoctor.errors import FidoctorError
    from fidoctor.live.session import _write

    fifo = tmp_path / "r.fifo"
    os.mkfifo(fifo)
    link = tmp_path / "r.link"
    link.symlink_to(tmp_path / "elsewhere.md")
    for path in (fifo, link):
        with pytest.raises(FidoctorError):
            _write(str(path), "# report\n")
    assert os.path.islink(link) and not (tmp_path / "elsewhere.md").exists()
    assert __import__("stat").S_ISFIFO(os.lstat(fifo).st_mode)
    _write(str(tmp_path / "ok.md"), "# report\n")
    assert (tmp_path / "ok.md").stat().st_mode & 0o777 == 0o600


def test_watch_pid_diagnoses_a_hung_compile_once(tmp_path, procs):
    """watch --pid: build-start, then a stall with diagnose's findings (build-process-stuck)."""
    p, _ws = hung_build(tmp_path, procs)
    ev = tmp_path / "ev.jsonl"
    w = subprocess.Popen(fidoctor_argv("watch", "--pid", str(p.pid), "--stall-after", "3",
                                       "--events", str(ev)),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not any(e["event"] == "diagnosis" for e in events_of(ev)):
            assert time.time() < deadline and w.poll() is None, events_of(ev)
            time.sleep(0.2)
    finally:
        terminate_tree(p.pid, sid=p.pid, grace=1.0)   # the server's tree; watch then ends
        out, err = w.communicate(timeout=30)
    kinds = [e["event"] for e in valid(events_of(ev))]
    assert kinds[:2] == ["start", "build-start"] and "stall" in kinds
    diag = next(e for e in events_of(ev) if e["event"] == "diagnosis")
    assert "build-process-stuck" in [f["id"] for f in diag["findings"]]
    assert "fidoctor: STALLED: single_decode (f16, hd128)" in err
    assert "build-process-stuck" in err          # the same renderer as diagnose
    assert w.returncode == 1                      # the target exited after a stall


def test_run_warns_of_a_deadline_then_on_stall_exit_ends_the_whole_tree(tmp_path, procs):
    """run → a hung compile: the deadline warning (ETA > the clock), the stall with diagnose's
    findings, then --on-stall exit: 124 and no process of the server's tree left, by pid."""
    ws = tmp_path / "base" / ".cache" / "flashinfer" / "0.7.2.post1" / "90a"
    fifo = tmp_path / "hang.fifo"
    os.mkfifo(fifo)
    write_module(ws, DECODE, f"--fifo {fifo}")
    server = tmp_path / "server.py"
    server.write_text("import subprocess, sys\n"
                      f"subprocess.run(['/usr/bin/ninja', '-C', {str(ws / 'cached_ops' / DECODE)!r}])\n")
    env = dict(os.environ, FLASHINFER_WORKSPACE_BASE=str(tmp_path / "base"))
    ev = tmp_path / "ev.jsonl"
    p = procs.start(fidoctor_argv("run", "--stall-after", "3", "--on-stall", "exit",
                                  "--deadline", "10=tiny-probe", "--events", str(ev), "--",
                                  sys.executable, str(server)), env=env, new_session=False)
    seen = set()
    while p.poll() is None:          # remember every pid of the server's tree while it lives
        procs.sweep()
        seen |= set(procs.alive()) - {p.pid}
        time.sleep(0.2)
    assert p.returncode == 124
    events = valid(events_of(ev))
    kinds = [e["event"] for e in events]
    assert kinds[:3] == ["start", "build-start", "deadline"], kinds
    d = events[2]
    assert d["setting"] == "tiny-probe" and "fidoctor warmup" in d["text"]
    assert "stall" in kinds and "diagnosis" in kinds and kinds[-1] == "exit"
    assert events[-1]["code"] == 124 and events[-1]["survivors"] == []
    assert len(seen) >= 3                                  # python, ninja, sh/nvcc
    procs.sweep()
    assert [q for q in procs.alive() if q in seen] == []


def _server_building(tmp_path, compile_args):
    ws = tmp_path / "base" / ".cache" / "flashinfer" / "0.7.2.post1" / "90a"
    write_module(ws, DECODE, compile_args)
    server = tmp_path / "server.py"
    server.write_text("import subprocess, sys\n"
                      f"subprocess.run(['/usr/bin/ninja', '-C', {str(ws / 'cached_ops' / DECODE)!r}])\n")
    return server, dict(os.environ, FLASHINFER_WORKSPACE_BASE=str(tmp_path / "base"))


def test_a_busy_compile_is_never_called_stuck_however_long(tmp_path, procs):
    """A compiler that burns CPU for 8 s with --stall-after 2: progress, finish, no stall."""
    server, env = _server_building(tmp_path, "--burn 8")
    ev = tmp_path / "ev.jsonl"
    p = procs.start(fidoctor_argv("run", "--stall-after", "2", "--progress-every", "2",
                                  "--events", str(ev), "--", sys.executable, str(server)),
                    env=env, new_session=False)
    assert p.wait(timeout=120) == 0
    kinds = [e["event"] for e in valid(events_of(ev))]
    assert "stall" not in kinds and kinds.count("progress") >= 2, kinds
    end = next(e for e in events_of(ev) if e["event"] == "build-end")
    assert end["ok"] is True and end["done"] == 1


def test_on_stall_report_writes_the_redacted_report_and_keeps_watching(tmp_path, procs):
    fifo = tmp_path / "hang.fifo"
    os.mkfifo(fifo)
    server, env = _server_building(tmp_path, f"--fifo {fifo}")
    env["FIDOCTOR_SECRET_TOKEN"] = "hunter2-secret-value"
    ev, report = tmp_path / "ev.jsonl", tmp_path / "stall.md"
    p = procs.start(fidoctor_argv("run", "--stall-after", "2", "--on-stall", "report",
                                  "--report", str(report), "--events", str(ev), "--",
                                  sys.executable, str(server)), env=env, new_session=False)
    deadline = time.time() + 60
    while not any(e["event"] == "report" for e in events_of(ev)):
        assert time.time() < deadline and p.poll() is None, events_of(ev)
        time.sleep(0.2)
    assert p.poll() is None                      # report, not exit: the server still runs
    with open(fifo, "w") as f:                   # unblock the compile: it finishes
        f.write("go")
    assert p.wait(timeout=60) == 0
    text = report.read_text()
    assert "build-process-stuck" in text and "hunter2-secret-value" not in text
    kinds = [e["event"] for e in valid(events_of(ev))]
    assert kinds.index("stall") < kinds.index("report") < kinds.index("build-end")
    assert next(e for e in events_of(ev) if e["event"] == "build-end")["ok"] is True


TTY_CHILD = """
import os, signal, sys, time
def on(sig, frame):
    print(f"child: got signal {sig}", flush=True)
    sys.exit(100 + sig)
signal.signal(signal.SIGINT, on)
print(f"child: ready tty={os.isatty(0)},{os.isatty(1)},{os.isatty(2)} "
      f"fg={os.tcgetpgrp(0) == os.getpgrp()}", flush=True)
time.sleep(60)
"""


def test_on_a_terminal_the_server_keeps_it_and_ctrl_c_reaches_it(tmp_path):
    """A real pty: the server's streams stay the terminal (not tapped), its process group
    owns the terminal, and the Ctrl-C typed there reaches it; fidoctor returns its code."""
    import pty

    child = tmp_path / "child.py"
    child.write_text(TTY_CHILD)
    pid, fd = pty.fork()
    if pid == 0:  # the child: fidoctor on the pty, as a shell would start it
        os.execv(sys.executable, fidoctor_argv("run", "--events", str(tmp_path / "ev.jsonl"),
                                               "--", sys.executable, str(child)))
    out = b""
    try:
        deadline = time.time() + 30
        while b"child: ready" not in out:
            assert time.time() < deadline, out
            out += os.read(fd, 4096)
        time.sleep(0.3)
        os.write(fd, b"\x03")                      # Ctrl-C, typed on the terminal
        while True:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    text = out.decode()
    assert "tty=True,True,True fg=True" in text, text
    assert "child: got signal 2" in text
    assert os.waitstatus_to_exitcode(status) == 102
    assert events_of(tmp_path / "ev.jsonl")[0]["tapped"] == []


def test_quiet_leaves_stderr_to_the_server_and_events_get_everything(tmp_path):
    r = run(["run", "--quiet", "--events", str(tmp_path / "ev.jsonl"), "--", "sh", "-c",
             "echo 'RuntimeError: Ninja build failed. Ninja output:' >&2; exit 1"])
    assert r.returncode == 1
    assert r.stderr == "RuntimeError: Ninja build failed. Ninja output:\n"
    ev = valid(events_of(tmp_path / "ev.jsonl"))
    hit = next(e for e in ev if e["event"] == "server-error")
    assert hit["kind"] == "jit-build-failed" and hit["stream"] == "stderr"
    assert any(e["event"] == "diagnosis" for e in ev)


def _release(fifo):
    """Let the fake compiler blocked on ``fifo`` finish (it reads to EOF, then writes -o)."""
    fd = os.open(fifo, os.O_WRONLY)
    os.close(fd)


def test_eta_is_re_estimated_from_the_running_ninjas_own_progress(tmp_path, procs):
    """A real ninja (-j 2) over five compile edges, each a real process blocked on its own
    FIFO until the test lets it finish: the first two finish 4 and 8 s into the build. From
    then on the progress line's ETA comes from the running ninja's own ``.ninja_log`` (its
    finished objects' walls, the objects still queued, 2 at a time), said with what it is
    based on; the seed table knows nothing of this module's kind, so before that the ETA is
    unknown. The 9 s deadline the start estimate could not judge is warned of from it."""
    from proc_helpers import fakecc

    name = "custom_kernel_fidoctor_test"            # no kind the seed table knows
    ws = tmp_path / "base" / ".cache" / "flashinfer" / "0.7.2.post1" / "90a"
    d = ws / "cached_ops" / name
    d.mkdir(parents=True)
    cc = fakecc() / "nvcc"
    lines = ["ninja_required_version = 1.3",
             "rule cuda_compile", "  command = " + str(cc) + " --fifo $fifo -o $out", "",
             "rule link", f"  command = {fakecc() / 'cicc'} -o $out $in", ""]
    objs, fifos = [], []
    for i in range(5):
        f = tmp_path / f"k{i}.fifo"
        os.mkfifo(f)
        fifos.append(f)
        obj = d / f"{name}_k{i}.cuda.o"
        objs.append(str(obj))
        lines += [f"build {obj}: cuda_compile", f"  fifo = {f}"]
    lines.append(f"build {d / (name + '.so')}: link {' '.join(objs)}")
    (d / "build.ninja").write_text("\n".join(lines) + "\n")
    server = tmp_path / "server.py"
    server.write_text("import subprocess\n"
                      f"subprocess.run(['/usr/bin/ninja', '-j', '2', '-C', {str(d)!r}])\n")
    env = dict(os.environ, FLASHINFER_WORKSPACE_BASE=str(tmp_path / "base"))
    ev = tmp_path / "ev.jsonl"
    p = procs.start(fidoctor_argv("run", "--progress-every", "1", "--stall-after", "600",
                                  "--deadline", "9=tiny-probe", "--events", str(ev), "--",
                                  sys.executable, str(server)), env=env, new_session=False)
    deadline = time.time() + 120
    while not any(e["event"] == "build-start" for e in events_of(ev)):
        assert time.time() < deadline and p.poll() is None, events_of(ev)
        time.sleep(0.1)
    start = time.time()
    for i, at in ((0, 4.0), (1, 8.0)):
        time.sleep(max(0.0, start + at - time.time()))
        _release(fifos[i])

    def progress_with(done):
        return [e for e in events_of(ev) if e["event"] == "progress" and e["done"] == done]

    while not progress_with(2):
        assert time.time() < deadline and p.poll() is None, events_of(ev)
        time.sleep(0.2)
    for f in fifos[2:]:
        _release(f)
    assert p.wait(timeout=60) == 0
    events = valid(events_of(ev))
    early = [e for e in events if e["event"] == "progress" and e["done"] == 0]
    assert early and all(e["eta_basis"] is None and "ETA unknown" in e["text"] for e in early)
    later = progress_with(2)[0]
    assert later["eta_basis"] == "ninja-progress", later
    assert "2/5 objects built in this run" in later["text"] and "2 at a time" in later["text"]
    assert later["eta_low_s"] >= 1
    if later["eta_high_s"] is None:                   # a floor only: no end is made up
        assert later["eta_left_s"] is None
    else:
        assert later["eta_low_s"] <= later["eta_left_s"] <= later["eta_high_s"]
    assert ("ETA ≈" in later["text"]) == (later["eta_high_s"] is not None)
    assert ("ETA ≥" in later["text"]) == (later["eta_high_s"] is None)
    warned = [e for e in events if e["event"] == "deadline"]
    assert len(warned) == 1 and warned[0]["eta_basis"] == "ninja-progress"
    assert warned[0]["setting"] == "tiny-probe" and "by its progress so far" in warned[0]["text"]
    end = next(e for e in events if e["event"] == "build-end")
    assert end["ok"] is True and end["done"] == 5


def test_watch_ends_when_the_server_exits_but_is_never_reaped(tmp_path, procs):
    """The server's parent never wait()s for it (a wrapper that sleeps): after a SIGKILL the
    server is a zombie. watch --pid ends at once, saying it exited (it ran on forever before,
    its pidfd readable and /proc/PID still there: a busy loop at full speed)."""
    parent = tmp_path / "parent.py"
    parent.write_text("import os, sys, time\n"
                      "pid = os.fork()\n"
                      "if pid == 0:\n    time.sleep(600)\n    os._exit(0)\n"
                      "print(pid, flush=True)\n"
                      "time.sleep(600)\n")
    p = procs.start([sys.executable, str(parent)], stdout=subprocess.PIPE)
    server = int(p.stdout.readline())
    procs.remember(server)
    ev = tmp_path / "ev.jsonl"
    w = procs.start(fidoctor_argv("watch", "--pid", str(server), "--events", str(ev)),
                    new_session=False)
    deadline = time.time() + 60
    while not events_of(ev):
        assert time.time() < deadline and w.poll() is None
        time.sleep(0.1)
    os.kill(server, signal.SIGKILL)
    assert w.wait(timeout=30) == 0
    assert psutil.Process(server).status() == psutil.STATUS_ZOMBIE   # still unreaped
    last = valid(events_of(ev))[-1]
    assert last["event"] == "exit" and last["text"] == f"pid {server} exited"


RECYCLE = r'''
import json, os, signal, subprocess, sys, time
ev = sys.argv[1]
target = subprocess.Popen(["sleep", "600"])
w = subprocess.Popen([sys.executable, "-m", "fidoctor", "watch", "--pid", str(target.pid),
                      "--events", ev])
deadline = time.time() + 60
while not (os.path.exists(ev) and os.path.getsize(ev)) and time.time() < deadline:
    time.sleep(0.1)
os.kill(w.pid, signal.SIGSTOP)              # the watch sleeps through the exit and the reuse
target.kill()
target.wait()
for _ in range(20):
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(target.pid - 1))
    imp = subprocess.Popen(["sleep", "600"])
    if imp.pid == target.pid:
        break
    imp.kill()
    imp.wait()
os.kill(w.pid, signal.SIGCONT)
try:
    rc = w.wait(timeout=30)
except subprocess.TimeoutExpired:
    rc = None
    w.kill()
    w.wait()
imp.kill()
imp.wait()
print(json.dumps({"pid": target.pid, "recycled": imp.pid == target.pid, "rc": rc}))
'''


def test_watch_does_not_follow_a_recycled_pid(tmp_path):
    """In a pid namespace of its own (so the test can hand the pid on: ns_last_pid), the
    watched server exits while watch --pid is stopped, and a new process gets its pid. The
    watch ends on the server's exit instead of watching the impostor (it followed it)."""
    script = tmp_path / "recycle.py"
    script.write_text(RECYCLE)
    ev = tmp_path / "ev.jsonl"
    r = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable,
                        str(script), str(ev)], capture_output=True, text=True, timeout=120,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if r.returncode != 0 and "unshare" in r.stderr:
        pytest.skip(f"no private pid namespace here: {r.stderr.strip()}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["recycled"], out                       # the pid really was reused
    assert out["rc"] == 0, (out, r.stderr[-2000:])
    last = valid(events_of(ev))[-1]
    assert last["event"] == "exit" and last["text"] == f"pid {out['pid']} exited"


DAEMON = """import os, sys, time
if os.fork():
    sys.exit(0)                   # the command fidoctor started exits at once, code 0
os.setsid()                       # the real server leaves the session, keeps its stdout
if os.fork():
    os._exit(0)
print("daemon up", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("kind", ["setsid-daemon", "background-child"])
def test_a_server_command_that_daemonizes_is_said_not_silently_left(tmp_path, procs, kind):
    """The command exits 0 at once and the real server runs on (a double fork with setsid that
    keeps its stdout; a plain `&` child in the session): run passes the code through and says
    which processes it left and how to watch them (it said nothing, exit 0, as if it watched
    the start). A command that leaves nothing says nothing (the streams test)."""
    body = DAEMON if kind == "setsid-daemon" else \
        "import subprocess, sys\nsubprocess.Popen(['sleep', '600'])\nsys.exit(0)\n"
    server = tmp_path / "server.py"
    server.write_text(body)
    ev = tmp_path / "ev.jsonl"
    p = procs.start(fidoctor_argv("run", "--events", str(ev), "--", sys.executable, str(server)),
                    new_session=False, stdout=subprocess.PIPE)
    assert p.wait(timeout=60) == 0
    procs.sweep()
    last = valid(events_of(ev))[-1]
    assert last["event"] == "exit" and last["code"] == 0
    left = last["left_running"]
    assert len(left) == 1, last
    procs.remember(left[0])                     # killed by the fixture afterwards
    assert left[0] in procs.alive()
    assert f"left 1 process(es) running: {left[0]} (" in last["text"]
    assert f"fidoctor watch --pid {left[0]}" in last["text"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_to_watch_ends_its_snapshot_child_and_removes_its_file(tmp_path, procs, sig):
    """watch --pid of a hung compile, stopped by SIGTERM (kubectl, timeout(1)) or SIGHUP (the
    terminal closed) while its stall snapshot is being gathered: it takes Ctrl-C's way out
    (130), the snapshot child ends and its unredacted file (the server's environment) is
    removed. Before, the watch died at once (143/129): the child ran on and the file stayed in
    /tmp (found by QA)."""
    p, _ws = hung_build(tmp_path, procs)
    w = procs.start(fidoctor_argv("watch", "--pid", str(p.pid), "--stall-after", "12",
                                  "--events", str(tmp_path / "ev.jsonl")), new_session=False)
    deadline = time.time() + 60
    child = None
    while child is None:
        assert time.time() < deadline and w.poll() is None
        for c in psutil.Process(w.pid).children():
            try:
                argv = c.cmdline()
            except psutil.Error:
                continue
            if "snapshot" in argv and "--no-redact" in argv:
                child = (c, argv[argv.index("-o") + 1])
        time.sleep(0.1)
    proc, path = child
    procs.remember(proc.pid)
    try:
        assert os.path.exists(path)
        os.kill(w.pid, sig)
        assert w.wait(timeout=30) == 130
        proc.wait(timeout=10)          # gone (psutil.TimeoutExpired if it ran on)
        assert not os.path.exists(path)
    finally:
        if os.path.exists(path):       # never leave a failed run's secrets in /tmp
            os.unlink(path)


def test_eta_text_says_what_the_re_estimate_rests_on():
    """The progress line's ETA for a build past its start estimate (the seed said 19 s; this
    box took 70+): with a queued object it is re-estimated from ninja's own finished objects;
    when the one object left has outrun them all, no end is made up and the line says why
    instead of repeating the start estimate alone."""
    from fidoctor.flashinfer import eta
    from fidoctor.live.observe import Build
    from fidoctor.live.session import Session

    est = eta.estimate(DECODE, cores=2, jobs=2)
    b = Build("/ws/cached_ops/m", "m", "m", None, "90a", 1, 1, time.time() - 73,
              outputs=["a", "b", "c"], estimate=est, finished=[24.0, 25.0], running=[40.0],
              jobs_seen=1)
    s = object.__new__(Session)
    text = Session.eta_text(s, b, time.time())
    assert text.startswith("longer than expected (estimated ") and "at its start" in text
    assert "1 still compiling has run longer than any finished object" in text
    assert "2/3 objects built in this run, median 24 s each, 1 at a time" in text
    b.finished, b.running = [24.0], [20.0, 3.0]
    text = Session.eta_text(s, b, time.time())
    assert text.startswith("ETA ≈ ") and "1/3 objects built in this run" in text


@pytest.mark.parametrize("closing", [">&-", "2>&-", ">&- 2>&-"])
def test_run_started_with_a_closed_stdout_or_stderr_passes_the_code_back(tmp_path, closing):
    """`fidoctor run -- CMD >&-` (a supervisor that closed stdout): the server's code came
    back as 1 with a traceback (flushing a stdout that is None at exit), and a file fidoctor
    opened could land on fd 1. Now fd 0-2 hold /dev/null while fidoctor runs (found by QA)."""
    ev = tmp_path / "ev.jsonl"
    argv = fidoctor_argv("run", "--events", str(ev), "--", "sh", "-c",
                         "echo out; echo err >&2; exit 4")
    r = subprocess.run(["sh", "-c", f'exec "$@" {closing}', "sh", *argv], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 4, r.stderr
    assert "Traceback" not in r.stderr
    events = valid(events_of(ev))
    assert [e["event"] for e in events] == ["start", "exit"] and events[-1]["code"] == 4


def _on_open(path):
    """Block until a file in ``path``'s dir is opened (real kernel inotify, IN_OPEN)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_CLOEXEC)
    assert fd >= 0
    try:
        assert libc.inotify_add_watch(fd, str(path).encode(), 0x20) >= 0
        os.read(fd, 4096)
    finally:
        os.close(fd)


def test_watch_once_of_a_server_that_exits_during_the_look_could_not_tell(tmp_path, procs):
    """The server exits between --once's two samples (killed the moment fidoctor opens its
    --state file, which it reads between them): 'could not tell' (2). It said 'not
    compiling' (0) about a process that was gone (found by QA)."""
    import threading

    p = procs.start(["sleep", "600"])
    state = tmp_path / "state" / "s.json"
    state.parent.mkdir()
    state.write_text("{}")
    t = threading.Thread(target=lambda: (_on_open(state.parent), p.kill()), daemon=True)
    t.start()
    try:
        r = run(["watch", "--pid", str(p.pid), "--once", "--state", str(state)])
    finally:
        p.kill()
        t.join(timeout=30)
    assert r.returncode == 2, r.stderr
    assert f"status: could not tell: pid {p.pid} exited while it was looked at" in r.stderr


def test_watch_on_stall_exit_ends_the_watched_tree_and_exits_124(tmp_path, procs):
    """watch --pid N --on-stall exit, as --help and the README's 'options as run' promise: a
    hung compile is diagnosed, then the watched server's whole tree is ended (by pid) and watch
    exits 124. It printed the diagnosis and kept watching the hung server forever (found by
    QA)."""
    p, _ws = hung_build(tmp_path, procs)
    procs.sweep()
    tree = set(procs.alive())
    assert len(tree) >= 4                          # python, ninja, sh, nvcc
    ev = tmp_path / "ev.jsonl"
    w = procs.start(fidoctor_argv("watch", "--pid", str(p.pid), "--stall-after", "3",
                                  "--on-stall", "exit", "--events", str(ev)), new_session=False)
    assert w.wait(timeout=120) == 124
    events = valid(events_of(ev))
    kinds = [e["event"] for e in events]
    assert "stall" in kinds and "diagnosis" in kinds and kinds[-1] == "exit"
    assert events[-1]["code"] == 124 and events[-1]["survivors"] == []
    p.wait(timeout=10)
    procs.sweep()
    assert [q for q in procs.alive() if q in tree] == []
