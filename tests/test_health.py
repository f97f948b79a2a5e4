"""Health-check contracts of ``diagnose``: --level quick, --format slurm / prom / npd.

Real boxes (gcc-built .so files, a real JIT log), the real CLI as a child
process, a real stalled mount (sshfs whose sftp-server is SIGSTOPped), and the
prom output scraped by a real Prometheus node-exporter (Debian's
prometheus-node-exporter, installed like sshfs when missing).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import DECODE, FA2, FA3, Box, run_cli

QUICK = {"cache_mount", "host", "cache", "fs", "locks", "jitlog", "jit_build_log"}


def _broken(box):
    ws = box.workspace()
    box.module(ws, DECODE)
    box.module(ws, FA3, so="truncated")
    return box


def _healthy(box):
    ws = box.workspace()
    for m in (DECODE, FA2):
        box.module(ws, m)
    return box


def diag(box, *args, **env):
    return run_cli(["diagnose", *args], env=box.env(**env))


def test_quick_level_gathers_static_facts_only(box):
    r = diag(_broken(box), "--level", "quick", "--json")
    doc = json.loads(r.stdout)
    assert set(doc["gather"]) == QUICK  # no target, toolkit, gpu, processes, rebuild, elf
    assert r.returncode == 1
    assert "cache-incomplete-module" in {f["id"] for f in doc["findings"]}


def _traced(box, tmp_path, *args):
    """The real CLI under strace -f: (the result, paths it opened, programs it exec'd)."""
    import sys

    strace = _apt_tool("strace", "strace")
    if not strace:
        pytest.skip("strace is not installable here")
    out = tmp_path / "trace"
    r = subprocess.run([strace, "-f", "-qq", "-o", str(out), "-e",
                        "trace=execve,open,openat,openat2", sys.executable, "-m", "fidoctor",
                        "diagnose", *args], env=box.env(), capture_output=True, text=True,
                       timeout=300)
    lines = out.read_text().splitlines()
    opened = [m.group(1) for ln in lines if "execve(" not in ln
              for m in [re.search(r'open(?:at2?)?\((?:[^,]*, )?"([^"]*)"', ln)] if m]
    execs = [ln for ln in lines if "execve(" in ln]
    return r, opened, execs


def test_quick_level_reads_no_build_ninja_and_runs_no_program(box, tmp_path):
    """The quick level's cache scan opens each .so (its ELF head) but no build.ninja, and
    fidoctor execs nothing (gatherers are forked, not exec'd); the full level, the twin,
    does both (its cache scan reads build.ninja, its target gatherer runs the interpreter)."""
    _broken(box)
    r, opened, execs = _traced(box, tmp_path, "--level", "quick", "--format", "npd")
    assert r.returncode == 1, r.stdout + r.stderr
    assert any(p.endswith(f"/{FA3}.so") for p in opened)  # the truncated .so was looked at
    assert not [p for p in opened if p.endswith("build.ninja")]
    assert len(execs) == 1, execs  # strace's own exec of python, nothing after it
    r, opened, execs = _traced(box, tmp_path, "--json")
    assert [p for p in opened if p.endswith("build.ninja")]
    assert len(execs) > 1


def test_slurm_format_drains_with_one_short_reason(box):
    r = diag(_broken(box), "--level", "quick", "--format", "slurm")
    assert r.returncode == 1
    [line] = r.stdout.splitlines()
    assert line == "Reason=fidoctor: cache-incomplete-module" and len(line) <= 64


def test_slurm_format_is_silent_and_zero_when_healthy(box):
    r = diag(_healthy(box), "--level", "quick", "--format", "slurm")
    assert (r.returncode, r.stdout) == (0, "")


def test_slurm_reason_counts_more_ids_and_never_passes_64(box, tmp_path):
    from conftest import log_line

    ws = _broken(box).workspace()
    box.module(ws, FA2, so="missing", objects=1)
    box.log(ws, [log_line("new", "building", FA2, time.time() - 60)])
    snap = tmp_path / "s.json"
    assert run_cli(["snapshot", "-o", str(snap)], env=box.env()).returncode == 0
    r = run_cli(["diagnose", "--from", str(snap), "--format", "slurm"])
    [line] = r.stdout.splitlines()
    assert r.returncode == 1 and re.fullmatch(r"Reason=fidoctor: [a-z-]+ \(\+\d+ more\)", line)
    # the cut itself, on a finding id longer than the line (a pure function of the diagnosis)
    from fidoctor.diagnosis import diagnose
    from fidoctor.model import Finding
    from fidoctor.render.health import slurm
    from fidoctor.snapshot import Snapshot

    d = diagnose(Snapshot.load(str(snap)))
    d.findings.insert(0, Finding(id="x" * 90, severity="error", title="long"))
    text, code, _ = slurm(d)
    assert code == 1 and len(text) == 64 and text.endswith("…")
    d = json.loads(snap.read_text())
    d["sections"] = {}
    snap.write_text(json.dumps(d))
    r = run_cli(["diagnose", "--from", str(snap), "--format", "slurm"])
    assert (r.returncode, r.stdout) == (0, "")  # not checked: the node is left alone, and said
    assert "not checked" in r.stderr


def test_npd_exit_codes(box, tmp_path):
    r = diag(_broken(box), "--level", "quick", "--format", "npd")
    assert r.returncode == 1 and r.stdout.startswith("FlashInfer JIT: cache-incomplete-module")
    assert len(r.stdout.strip()) <= 80
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"schema_version": 1, "taken_at": 1.0, "context": {},
                                 "sections": {}}))
    r = run_cli(["diagnose", "--from", str(empty), "--format", "npd"])
    assert r.returncode == 2 and r.stdout.startswith("fidoctor could not check")


def test_npd_ok_on_a_healthy_box(box):
    r = diag(_healthy(box), "--level", "quick", "--format", "npd")
    assert (r.returncode, r.stdout.strip()) == (0, "FlashInfer JIT healthy")


def test_prom_lines_are_textfile_format(box):
    r = diag(_broken(box), "--level", "quick", "--format", "prom")
    assert r.returncode == 1
    assert 'fidoctor_finding{id="cache-incomplete-module",severity="error"} 1' in r.stdout
    assert 'fidoctor_exit_code{level="quick"} 1' in r.stdout
    sample = re.compile(r'^[a-z_]+(\{([a-z_]+="[^"\\]*(\\.[^"\\]*)*",?)*\})? [0-9.e+-]+$')
    for line in r.stdout.splitlines():
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or sample.match(line), line


def ensure_node_exporter() -> str:
    return _apt_tool("prometheus-node-exporter", "prometheus-node-exporter")


def _apt_tool(exe_name: str, package: str) -> str:
    import shutil

    exe = shutil.which(exe_name)
    if exe:
        return exe
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    base = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "-y", "-qq", "install",
            "--no-install-recommends", package]
    r = subprocess.run(base, env=env, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=300", "update", "-qq"], env=env,
                       capture_output=True, timeout=600)
        subprocess.run(base, env=env, capture_output=True, text=True, timeout=900)
    return shutil.which(exe_name) or ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_node_exporter_scrapes_the_textfile(box, tmp_path, procs):
    exe = ensure_node_exporter()
    if not exe:
        pytest.skip("prometheus-node-exporter could not be installed from Debian")
    d = tmp_path / "textfile"
    d.mkdir()
    r = diag(_broken(box), "--level", "quick", "--format", "prom")
    (d / "fidoctor.prom").write_text(r.stdout)
    port = _free_port()
    procs.start([exe, "--collector.disable-defaults", "--collector.textfile",
                 f"--collector.textfile.directory={d}", f"--web.listen-address=127.0.0.1:{port}"])
    deadline, body = time.monotonic() + 30, ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                body = resp.read().decode()
            break
        except OSError:
            time.sleep(0.2)
    assert 'fidoctor_finding{id="cache-incomplete-module",severity="error"} 1' in body
    assert re.search(r"node_textfile_scrape_error 0\b", body), body[-2000:]


def test_quick_level_names_a_stalled_mount_and_ends(tmp_path, built_so, procs):
    """sshfs whose sftp-server is stopped: every stat below the mount blocks, as on a dead NFS."""
    from fs_helpers import SFTP_SERVER, ensure_sshfs

    why = ensure_sshfs()
    if why:
        pytest.skip(why)
    served, mnt, pidfile = tmp_path / "served", tmp_path / "mnt", tmp_path / "sftp.pid"
    served.mkdir()
    mnt.mkdir()
    ssh = tmp_path / "ssh-to-sftp-server"
    ssh.write_text(f"#!/bin/sh\necho $$ > {pidfile}\nexec {SFTP_SERVER}\n")
    ssh.chmod(0o755)
    procs.start(["sshfs", "-f", "-o", f"ssh_command={ssh}", f"localhost:{served}", str(mnt)])
    deadline = time.monotonic() + 20
    while f" {mnt} " not in Path("/proc/self/mountinfo").read_text() or not pidfile.exists():
        assert time.monotonic() < deadline, "sshfs did not mount"
        time.sleep(0.05)
    server = int(pidfile.read_text())
    procs.remember(server)
    try:
        (mnt / "base").mkdir()
        box = _healthy(Box(mnt / "base", built_so))
        os.kill(server, signal.SIGSTOP)
        try:
            r = run_cli(["diagnose", "--level", "quick", "--json"], env=box.env(), timeout=30)
            fmts = {fmt: run_cli(["diagnose", "--level", "quick", "--format", fmt],
                                 env=box.env(), timeout=30) for fmt in ("slurm", "prom", "npd")}
        finally:
            os.kill(server, signal.SIGCONT)
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
    doc = json.loads(r.stdout)
    assert r.returncode == 1
    assert doc["gather"]["cache_mount"]["status"] == "timeout"
    [f] = [f for f in doc["findings"] if f["id"] == "cache-unreadable"]
    assert f["severity"] == "error" and "stalled or dead mount" in f["title"]
    # each health format says unreadable (never healthy, never "not checked" = left alone)
    assert (fmts["slurm"].returncode, fmts["slurm"].stdout) == (
        1, "Reason=fidoctor: cache-unreadable\n"), fmts["slurm"]
    assert fmts["npd"].returncode == 1, fmts["npd"]
    assert fmts["npd"].stdout.startswith("FlashInfer JIT: cache-unreadable")
    assert fmts["prom"].returncode == 1, fmts["prom"]
    assert 'fidoctor_finding{id="cache-unreadable",severity="error"} 1' in fmts["prom"].stdout
    assert 'fidoctor_exit_code{level="quick"} 1' in fmts["prom"].stdout


def test_slurm_and_npd_say_not_checked_when_this_node_cannot_be_looked_at(box, tmp_path):
    """README: with --format slurm "a node fidoctor could not check exits 0 (never drained for
    fidoctor's own failure) and says why on stderr"; npd says unknown (2). A health check whose
    --python names a venv this node lacks (not deployed yet), or whose --pid is gone, could not
    check. Before: both exited 2 with an error line; as a Slurm Prolog a non-zero exit drains
    the node ("Prolog error")."""
    env = _healthy(box).env()
    gone = str(tmp_path / "not-deployed" / "bin" / "python")
    for target in (["--python", gone], ["--pid", "999999999"]):
        r = run_cli(["diagnose", "--level", "quick", "--format", "slurm", *target], env=env)
        assert (r.returncode, r.stdout) == (0, ""), r.stderr
        assert r.stderr.startswith("fidoctor: not checked (") and "left alone" in r.stderr
        r = run_cli(["diagnose", "--level", "quick", "--format", "npd", *target], env=env)
        assert r.returncode == 2 and r.stdout.startswith("fidoctor could not check: ")
        assert len(r.stdout.strip()) <= 80
    r = run_cli(["diagnose", "--level", "quick", "--python", gone], env=env)
    assert r.returncode == 2 and "fidoctor: error:" in r.stderr  # other formats: unchanged


def test_json_and_a_health_format_is_a_usage_error(box):
    """``--json`` promises one JSON object; with ``--format slurm|prom|npd`` it was silently
    ignored (a Reason= line, a textfile or an npd line came out, exit 0/1). Now exit 2."""
    for fmt in ("slurm", "prom", "npd"):
        r = diag(_healthy(box), "--level", "quick", "--format", fmt, "--json")
        assert r.returncode == 2 and "contradict" in r.stderr and r.stdout == "", (fmt, r)


def _scrape(exe, d, procs) -> str:
    port = _free_port()
    procs.start([exe, "--collector.disable-defaults", "--collector.textfile",
                 f"--collector.textfile.directory={d}", f"--web.listen-address=127.0.0.1:{port}"])
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                return resp.read().decode()
        except OSError:
            assert time.monotonic() < deadline, "node-exporter did not answer"
            time.sleep(0.2)


def test_prom_has_one_series_per_module_building_in_two_workspaces(box, tmp_path, procs):
    """The same module left building in two workspaces (two FlashInfer versions' dirs under one
    base, as after an upgrade): prom wrote ``fidoctor_build_seconds{module="m"}`` twice, and a
    real node-exporter rejects a textfile with a duplicate series (scrape error: the node's
    whole fidoctor file is dropped, findings included). Now one series, the longest age."""
    from conftest import log_line

    for version, age in (("0.7.2.post1", 60), ("0.7.1", 600)):
        ws = box.workspace(version=version)
        box.module(ws, FA2, so="missing", objects=1)
        box.log(ws, [log_line("new", "building", FA2, time.time() - age)])
    r = diag(box, "--level", "quick", "--format", "prom")
    assert r.returncode == 1, r.stderr
    series = [ln.rsplit(" ", 1)[0] for ln in r.stdout.splitlines() if not ln.startswith("#")]
    assert len(series) == len(set(series)), r.stdout
    [build] = [ln for ln in r.stdout.splitlines() if ln.startswith("fidoctor_build_seconds{")]
    assert float(build.rsplit(" ", 1)[1]) >= 600
    exe = ensure_node_exporter()
    if not exe:
        pytest.skip("prometheus-node-exporter could not be installed from Debian")
    d = tmp_path / "textfile"
    d.mkdir()
    (d / "fidoctor.prom").write_text(r.stdout)
    body = _scrape(exe, d, procs)
    assert re.search(r"node_textfile_scrape_error 0\b", body), body[-2000:]
    assert f'fidoctor_build_seconds{{module="{FA2}"}}' in body


def test_quick_level_names_a_stalled_mount_below_the_cache_root(tmp_path, built_so, procs):
    """The cache on local disk, one module dir on its own sshfs mount whose sftp-server is
    stopped (a module dir or cached_ops bind/NFS-mounted from shared storage, gone dead).
    Before: the root answered, the module scan blocked, the cache section timed out, and every
    format said "not checked" (slurm: exit 0, the node left alone; npd/prom: 2) for a node
    whose cache hangs every reader. Now the mount probe also stats the mounts below the root:
    cache-unreadable (error) in every format, within the cap."""
    from fs_helpers import SFTP_SERVER, ensure_sshfs

    why = ensure_sshfs()
    if why:
        pytest.skip(why)
    box = _healthy(Box(tmp_path / "base", built_so))
    mnt = box.workspace() / "cached_ops" / "batch_decode_on_shared_storage"
    served, pidfile = tmp_path / "served", tmp_path / "sftp.pid"
    served.mkdir()
    mnt.mkdir()
    ssh = tmp_path / "ssh-to-sftp-server"
    ssh.write_text(f"#!/bin/sh\necho $$ > {pidfile}\nexec {SFTP_SERVER}\n")
    ssh.chmod(0o755)
    procs.start(["sshfs", "-f", "-o", f"ssh_command={ssh}", f"localhost:{served}", str(mnt)])
    deadline = time.monotonic() + 20
    while f" {mnt} " not in Path("/proc/self/mountinfo").read_text() or not pidfile.exists():
        assert time.monotonic() < deadline, "sshfs did not mount"
        time.sleep(0.05)
    server = int(pidfile.read_text())
    procs.remember(server)
    try:
        (mnt / "batch_decode_on_shared_storage.so").write_bytes(built_so.read_bytes())
        live = run_cli(["diagnose", "--level", "quick", "--json"], env=box.env(), timeout=30)
        assert "cache-unreadable" not in {f["id"] for f in json.loads(live.stdout)["findings"]}
        os.kill(server, signal.SIGSTOP)
        try:
            fmts = {fmt: run_cli(["diagnose", "--level", "quick", "--format", fmt],
                                 env=box.env(), timeout=30)
                    for fmt in ("json", "slurm", "prom", "npd")}
        finally:
            os.kill(server, signal.SIGCONT)
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
    doc = json.loads(fmts["json"].stdout)
    assert fmts["json"].returncode == 1, fmts["json"].stderr
    [f] = [f for f in doc["findings"] if f["id"] == "cache-unreadable"]
    assert f["severity"] == "error" and "stalled or dead mount" in f["title"]
    assert (fmts["slurm"].returncode, fmts["slurm"].stdout) == (
        1, "Reason=fidoctor: cache-unreadable\n"), fmts["slurm"]
    assert fmts["npd"].returncode == 1 and "cache-unreadable" in fmts["npd"].stdout
    assert fmts["prom"].returncode == 1
    assert 'fidoctor_finding{id="cache-unreadable",severity="error"} 1' in fmts["prom"].stdout


def test_prom_ages_a_held_build_lock_at_the_quick_level(box, tmp_path, procs):
    """A real flock(1) holding a module's build lock (mtime 15 min ago) and a real flock(1)
    blocked on it, the lock named with a quote, a backslash, a newline, ``=`` and non-ASCII.
    Before: ``--level quick`` (what every health check runs) lists lock files without lstat,
    so ``fidoctor_lock_wait_seconds`` was never written and the text said "modified unknown
    age ago". Now the few held locks are aged; the label is escaped so that a real
    node-exporter scrapes it back to the same name."""
    ws = box.workspace()
    name = 'ev"il\\mod\nname=é'
    box.module(ws, name, so="missing", objects=1)
    lk = ws / "cached_ops" / "tmp" / f"{name}.lock"
    os.utime(lk, (time.time() - 900, time.time() - 900))
    procs.start(["flock", str(lk), "sleep", "120"])
    deadline = time.monotonic() + 20
    while True:  # held before the waiter queues up
        probe = subprocess.run(["flock", "-n", str(lk), "true"], capture_output=True)
        if probe.returncode != 0:
            break
        assert time.monotonic() < deadline, "flock did not take the lock"
        time.sleep(0.05)
    procs.start(["flock", str(lk), "true"])
    r = diag(box, "--level", "quick", "--format", "prom")
    assert r.returncode == 1, r.stderr
    assert 'fidoctor_finding{id="build-lock-held",severity="error"} 1' in r.stdout
    [line] = [ln for ln in r.stdout.splitlines() if ln.startswith("fidoctor_lock_wait_seconds{")]
    label = 'ev\\"il\\\\mod\\nname=é.lock'
    assert line.startswith(f'fidoctor_lock_wait_seconds{{lock="{label}"}} ')
    assert float(line.rsplit(" ", 1)[1]) >= 890
    exe = ensure_node_exporter()
    if not exe:
        pytest.skip("prometheus-node-exporter could not be installed from Debian")
    d = tmp_path / "textfile"
    d.mkdir()
    (d / "fidoctor.prom").write_text(r.stdout)
    body = _scrape(exe, d, procs)
    assert re.search(r"node_textfile_scrape_error 0\b", body), body[-2000:]
    assert f'fidoctor_lock_wait_seconds{{lock="{label}"}}' in body


def test_not_checked_stays_one_line_when_the_reason_quotes_a_hostile_path(tmp_path, built_so):
    """A real snapshot of a box whose workspace base has a newline in its name, its cache
    marked as cut by the scan budget (``not_scanned``: what a too-big cache leaves; set in
    the snapshot, the one stand-in), only quick's sections kept. The not-checked reason
    quotes the workspace path.
    Before: slurm's stderr note broke in two (what fails here), and npd printed the reason
    raw too (two lines when the path falls within its 80 characters). Now each is one line,
    the newline shown as ``\\n``."""
    base = tmp_path / "evil\nbase"
    box = _healthy(Box(base, built_so))
    snap = tmp_path / "s.json"
    assert run_cli(["snapshot", "-o", str(snap)], env=box.env()).returncode == 0
    doc = json.loads(snap.read_text())
    [ws] = doc["sections"]["cache"]["data"]["workspaces"]
    assert "\n" in ws["path"]
    ws["not_scanned"] = {"count": 3}
    doc["sections"] = {k: v for k, v in doc["sections"].items() if k in QUICK}  # as quick's
    snap.write_text(json.dumps(doc))
    r = run_cli(["diagnose", "--from", str(snap), "--format", "npd"])
    assert r.returncode == 2 and r.stdout.startswith("fidoctor could not check: 3 module")
    assert r.stdout.count("\n") == 1 and len(r.stdout.strip()) <= 80, r.stdout
    r = run_cli(["diagnose", "--from", str(snap), "--format", "slurm"])
    assert (r.returncode, r.stdout) == (0, "")
    assert r.stderr.count("\n") == 1 and "evil\\nbase" in r.stderr, r.stderr
