"""build-process-stuck, jit-log-unfinished's join, build-memory-pressure on real builds."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import psutil
import pytest
from conftest import DECODE, FA3, Box, log_line
from proc_helpers import (
    make_fifo,
    reparented,
    snap_of,
    start_server,
    wait_for,
    write_module,
)

from fidoctor.diagnosis import diagnose
from fidoctor.flashinfer.jobmem import job_peak_bytes
from fidoctor.snapshot import Snapshot

pytestmark = pytest.mark.timeout(90)


def _of(diag, fid, subject_part=""):
    return [f for f in diag.findings if f.id == fid and subject_part in f.subject]


def _fix_ids(f):
    return [x.id for x in f.fixes]


def test_orphaned_blocked_build_is_stuck_error(box, procs, tmp_path):
    ws = box.workspace()
    fifo = make_fifo(tmp_path / "never.fifo")
    write_module(ws, DECODE, f"--fifo {fifo}")
    box.log(ws, [log_line("new", "building", DECODE, time.time() - 300)])
    server = start_server(procs, ws, DECODE, box.env())
    nvcc, ninja = procs.find("nvcc"), procs.find("ninja")
    server.kill()
    server.wait()
    wait_for(lambda: reparented(ninja, server.pid), what="ninja re-parented")
    snap = snap_of(box.env())
    diag = diagnose(snap)
    [f] = _of(diag, "build-process-stuck", str(box.base))
    assert f.severity == "error" and "orphaned" in f.title
    text = "\n".join(f.evidence)
    assert f"pid {ninja} ninja" in text and f"pid {nvcc} nvcc" in text
    assert _fix_ids(f) == ["terminate-build-tree"]
    assert {ninja, nvcc} <= set(f.data["pids"])
    assert f.data["pgids"] and os.getpgid(nvcc) in f.data["pgids"]
    assert f.data["sid"] == os.getsid(ninja) and f.data["module_dir"].endswith(DECODE)
    # The log says "Building" and the tree is stuck: not "a cold build".
    [j] = _of(diag, "jit-log-unfinished", str(box.base))
    assert j.severity == "error" and nvcc in j.data["pids"]
    # The snapshot carries every fact: replay gives the same findings.
    again = diagnose(Snapshot.from_dict(json.loads(json.dumps(snap.to_dict()))))
    assert [x.to_dict() for x in again.findings] == [x.to_dict() for x in diag.findings]


def test_progressing_build_is_info_without_terminate(box, procs):
    ws = box.workspace()
    write_module(ws, FA3, "--burn 60")
    box.log(ws, [log_line("new", "building", FA3, time.time() - 30)])
    start_server(procs, ws, FA3, box.env())
    nvcc = procs.find("nvcc")
    diag = diagnose(snap_of(box.env()))
    [f] = _of(diag, "build-process-stuck", str(box.base))
    assert f.severity == "info" and "progressing" in f.title and f.fixes == []
    assert nvcc in f.data["pids"] and f.data["progressing"] is True
    [j] = _of(diag, "jit-log-unfinished", str(box.base))
    assert j.severity == "info" and "not a hang" in j.title
    mine = [x for x in diag.findings if x.id.startswith("build-") and str(box.base) in x.subject]
    assert mine and not any(x.is_problem for x in mine)


def test_stopped_compiler_is_stuck_error(box, procs):
    ws = box.workspace()
    write_module(ws, DECODE, "--burn 60")
    start_server(procs, ws, DECODE, box.env())
    nvcc = procs.find("nvcc")
    os.kill(nvcc, signal.SIGSTOP)
    procs.find("nvcc", state="stopped")
    diag = diagnose(snap_of(box.env()))
    [f] = _of(diag, "build-process-stuck", str(box.base))
    assert f.severity == "error" and "stopped" in f.title and str(nvcc) in f.title
    assert f.data["stopped_pids"] == [nvcc]
    assert f"kill -CONT {nvcc}" in f.fixes[0].commands
    assert "terminate-build-tree" in _fix_ids(f)
    # ninja shares its live Python parent's group: that group must not be signalled.
    assert os.getpgid(procs.find("ninja")) not in f.data["pgids"]
    assert os.getpgid(nvcc) in f.data["pgids"]


def test_memory_pressure_warns_with_concrete_max_jobs(box, procs):
    ws = box.workspace()
    write_module(ws, FA3, "--burn 60")
    start_server(procs, ws, FA3, box.env(), "-j", "64")
    ninja = procs.find("ninja")
    procs.find("nvcc")
    snap = snap_of(box.env())
    avail = snap.data("host")["mem_available"]
    [f] = _of(diagnose(snap), "build-memory-pressure")
    assert f.severity == "warning" and _fix_ids(f) == ["set-max-jobs"]
    n = f.data["max_jobs"]
    assert 1 <= n < 64 and f.fixes[0].commands == [f"export MAX_JOBS={n}"]
    assert n * job_peak_bytes(FA3) <= avail + (1 << 30)  # fits in what is available
    assert f"ninja pid {ninja}" in "\n".join(f.evidence) and "64 jobs" in "\n".join(f.evidence)


def test_memory_pressure_quiet_for_one_light_job(box, procs):
    ws = box.workspace()
    write_module(ws, DECODE, "--burn 60")
    start_server(procs, ws, DECODE, box.env(), "-j", "1")
    ninja = procs.find("ninja")
    procs.find("nvcc")
    found = _of(diagnose(snap_of(box.env())), "build-memory-pressure")
    # Another box's build on this shared machine may warn; ours must not be in it.
    assert all(f"ninja pid {ninja}" not in "\n".join(f.evidence) for f in found)


def test_worker_under_another_name_counts_as_progress(box, procs, tmp_path):
    """ninja → a Python "nvcc shim" burning CPU: the shim's CPU is the tree's progress."""
    ws = box.workspace()
    shim = tmp_path / "shim.py"
    shim.write_text("import time\nt = time.time()\nwhile time.time() - t < 60:\n    pass\n")
    write_module(ws, DECODE, "", command=f"{sys.executable} {shim} $out")
    start_server(procs, ws, DECODE, box.env())
    ninja = procs.find("ninja")
    wait_for(lambda: any(c.name().startswith("python")
                         for c in psutil.Process(ninja).children(recursive=True)),
             what="the shim under ninja")
    diag = diagnose(snap_of(box.env()))
    [f] = _of(diag, "build-process-stuck", str(box.base))
    assert f.severity == "info" and f.data["progressing"] is True
    assert len(f.data["pids"]) >= 2 and ninja in f.data["pids"]


def test_build_in_another_cache_is_not_judged(box, procs, tmp_path, built_so):
    """Another workspace's hung build shares the process table, not this diagnosis."""
    other = Box(tmp_path / "other", built_so)
    (tmp_path / "other").mkdir()
    ws = other.workspace()
    fifo = make_fifo(tmp_path / "never.fifo")
    write_module(ws, DECODE, f"--fifo {fifo}")
    start_server(procs, ws, DECODE, other.env())
    nvcc = procs.find("nvcc")
    box.workspace()
    snap = snap_of(box.env())
    seen = {p["pid"]: p for p in snap.data("processes")["processes"]}
    assert seen[nvcc]["in_target"] is False  # recorded, as a fact
    assert not [f for f in diagnose(snap).findings
                if f.id == "build-process-stuck" and str(other.base) in f.subject]


def test_chains_left_by_a_dead_ninja_are_one_build(box, procs):
    """Seen on an H100: the orphaned ninja dies after its first edge and each in-flight
    ``sh -c nvcc`` chain is re-parented on its own. Still one build, one finding."""
    ws = box.workspace()
    d = write_module(ws, FA3, "--burn 60", link=False)
    src = ws / "generated" / FA3 / "k1.cu"
    src.write_text("// kernel\n")
    nf = d / "build.ninja"
    nf.write_text(nf.read_text() + f"build {d}/{FA3}_k1.cuda.o: cuda_compile {src}\n")
    server = start_server(procs, ws, FA3, box.env(), "-j2")
    ninja = procs.find("ninja")

    def nvccs():
        return [c.pid for c in psutil.Process(ninja).children(recursive=True) if c.name() == "nvcc"]

    wait_for(lambda: len(nvccs()) == 2, what="two compiling nvcc")
    compilers = nvccs()
    server.kill()
    server.wait()
    wait_for(lambda: reparented(ninja, server.pid), what="ninja re-parented")
    os.kill(ninja, signal.SIGKILL)
    os.waitpid(ninja, 0)  # we are the subreaper: reap it as init would
    diag = diagnose(snap_of(box.env()))
    found = _of(diag, "build-process-stuck", str(box.base))
    assert len(found) == 1, [f.title for f in found]
    assert set(compilers) <= set(found[0].data["pids"])
    assert found[0].severity == "warning" and found[0].data["orphaned"]
