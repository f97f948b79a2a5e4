"""warmup without a FlashInfer build: tree kill, specs, CLI contracts, --check/--clear-incomplete.

Everything here uses real processes (children that ignore SIGTERM, ninja-style
per-edge process groups, a real flock) and real directories.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli
from warmup_helpers import alive, hold_flock, kill_and_wait

from fidoctor.errors import FidoctorError
from fidoctor.kill import terminate_tree
from fidoctor.proclocks import lock_holders
from fidoctor.warmup import specs
from fidoctor.warmup.watch import TreeWatch

# A root that starts: a child ignoring SIGTERM in its own process group (as
# ninja does for each edge), a grandchild of that, and a double-forked orphan
# (re-parented to init, still in the root's session). It prints all pids.
TREE = r"""
import os, signal, sys, time, subprocess
ign = ("import os,signal,time,subprocess,sys\n"
       "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
       "c = subprocess.Popen([sys.executable,'-c','import time; time.sleep(1000)'])\n"
       "print(os.getpid(), c.pid, flush=True)\n"
       "time.sleep(1000)\n")
p = subprocess.Popen([sys.executable, "-c", ign], stdout=subprocess.PIPE, text=True,
                     preexec_fn=lambda: os.setpgid(0, 0))
a, b = p.stdout.readline().split()
r, w = os.pipe()
if os.fork() == 0:
    if os.fork() == 0:
        os.write(w, str(os.getpid()).encode()); os.close(w)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(1000)
    os._exit(0)
orphan = os.read(r, 32).decode()
print(os.getpid(), a, b, orphan, flush=True)
time.sleep(1000)
"""


def start_tree():
    p = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True,
                         start_new_session=True)
    pids = [int(x) for x in p.stdout.readline().split()]
    assert len(pids) == 4
    return p, pids


@pytest.mark.timeout(60)
def test_terminate_tree_ends_sigterm_ignorers_own_pgids_and_orphans():
    p, pids = start_tree()
    try:
        assert len(set(os.getpgid(x) for x in pids)) >= 2, "an edge has its own process group"
        assert alive(pids) == pids
        left = terminate_tree(p.pid)
        p.wait(timeout=10)
        assert left == []
        assert alive(pids) == []
    finally:
        for x in pids:
            try:
                os.kill(x, signal.SIGKILL)
            except OSError:
                pass


@pytest.mark.timeout(60)
def test_terminate_tree_without_session_spares_unrelated_session_members():
    """follow_session=False (orphans we did not start) must not touch the rest of the session."""
    p, pids = start_tree()
    try:
        left = terminate_tree(pids[1], follow_session=False)  # the SIGTERM-ignoring edge only
        assert left == []
        assert alive(pids[1:3]) == []
        assert alive([pids[0], pids[3]]) == [pids[0], pids[3]]
    finally:
        terminate_tree(p.pid)
        p.wait(timeout=10)
        assert alive(pids) == []


def test_parse_spec_short_and_full_names():
    s = specs.parse_spec("prefill-fa3:f16")
    assert (s.kind, s.dtype, s.head_dim, s.backend, s.is_sm90) == ("prefill-fa3", "f16", 128,
                                                                   "fa3", True)
    assert specs.parse_spec("prefill").kind == "prefill-fa2"
    full = specs.parse_spec("decode:bf16:64").expected_name()
    assert full.startswith("batch_decode_with_kv_cache_dtype_q_bf16_") and "_dtype_idx_i32_" in full
    assert specs.parse_spec(full) == specs.ModuleSpec("decode", "bf16", 64)
    fa3 = specs.ModuleSpec("single-prefill-fa3", "f16", 128).expected_name()
    assert fa3.endswith("_f16qk_False_sm90") and specs.parse_spec(fa3).is_sm90
    for bad in ("bogus", "decode:f32", "decode:bf16:100", "decode:bf16:x", "a:b:c:d"):
        with pytest.raises(FidoctorError):
            specs.parse_spec(bad)


def test_select_defaults_add_and_disable_sm90():
    d = specs.select(None, sm90=True, disable_sm90=False)
    assert [s.key for s in d] == ["decode:bf16:128", "prefill-fa2:bf16:128", "prefill-fa3:bf16:128",
                                  "decode:f16:128", "prefill-fa2:f16:128", "prefill-fa3:f16:128"]
    assert not any(s.is_sm90 for s in specs.select(None, sm90=False, disable_sm90=False))
    assert not any(s.is_sm90 for s in specs.select(None, sm90=True, disable_sm90=True))
    added = specs.select("+single-decode:f16:64", sm90=False, disable_sm90=False)
    assert len(added) == 5 and added[-1].key == "single-decode:f16:64"
    only = specs.select("decode,decode:bf16", sm90=True, disable_sm90=False)
    assert [s.key for s in only] == ["decode:bf16:128"]


def test_cli_list_plain_and_json():
    r = run_cli(["warmup", "--list", "--arch", "9.0a"])
    assert r.returncode == 0, r.stderr
    assert "prefill-fa3:bf16:128" in r.stdout and "_sm90" in r.stdout
    r = run_cli(["warmup", "--list", "--json", "--arch", "8.0", "--modules", "+single-decode"])
    doc = json.loads(r.stdout)
    keys = [m["key"] for m in doc["modules"]]
    assert "prefill-fa3:bf16:128" not in keys and "single-decode:bf16:128" in keys
    assert all(m["expected_name"] for m in doc["modules"])


@pytest.mark.parametrize("args, words", [
    (["--python", "/nonexistent/python"], "no such file"),
    # --check judged the cache alone and said "ok" (exit 0) for an interpreter that is not there
    (["--check", "--python", "/nonexistent/python"], "no such file"),
    (["--modules", "bogus"], "unknown module spec"),
    (["--stall-after", "0"], "not in the range x>0"),
    (["--list", "--check"], "exclusive"),
    # FlashInfer's own parser raised in the child: "ValueError('not enough values to unpack')"
    # with the hint "install flashinfer-python in the target" (found by QA)
    (["--plan", "--arch", "sm_90;rm -rf /"], "'sm_90' is not MAJOR.MINOR"),
    (["--arch", "90a"], "'90a' is not MAJOR.MINOR"),
    (["--arch", "9.0a.1"], "is not MAJOR.MINOR"),
    # the hint named -o FILE, an option warmup does not have (found by QA)
    (["--arch", "9.0a", "--once", "/"], "hint: pick another path with --once"),
    (["--arch", "9.0a", "--once", "/dev/full"], "hint: pick another path with --once"),
])
def test_cli_bad_arguments_exit_2_one_line(args, words):
    r = run_cli(["warmup", *args])
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert words in r.stderr and "Traceback" not in r.stderr


@pytest.mark.timeout(120)
def test_cli_target_without_flashinfer_exits_2_with_hint():
    """fidoctor's own dev venv has no FlashInfer: warmup cannot start (exit 2), says why."""
    r = run_cli(["warmup", "--python", sys.executable, "--arch", "9.0a"])
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "flashinfer" in r.stderr.lower() and "hint:" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.timeout(300)
def test_arch_separators_become_flashinfers_spaces_and_a_bad_env_list_is_named(tmp_path):
    """--arch '9.0a,8.0' reaches the real target as FlashInfer's '9.0a 8.0' (the plan says the
    arch it used); FLASHINFER_CUDA_ARCH_LIST='9.0a,8.0' in the environment, which FlashInfer
    cannot read, is named (exit 2) instead of the child's ValueError with a hint to install
    flashinfer-python (found by QA)."""
    from warmup_helpers import build_env, target_venv

    py = target_venv()
    env = build_env(py.parent.parent, tmp_path / "base")
    env.pop("FLASHINFER_CUDA_ARCH_LIST")
    r = run_cli(["warmup", "--python", str(py), "--plan", "--json", "--arch", "9.0a,8.0",
                 "--modules", "decode:f16:64"], env=env, timeout=240)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["arch"] == "9.0a 8.0"
    env["FLASHINFER_CUDA_ARCH_LIST"] = "9.0a,8.0"
    r = run_cli(["warmup", "--python", str(py), "--plan"], env=env, timeout=240)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "FLASHINFER_CUDA_ARCH_LIST='9.0a,8.0' is not a list FlashInfer can read" in r.stderr
    assert "install flashinfer" not in r.stderr and "Traceback" not in r.stderr


@pytest.mark.timeout(300)
def test_workspace_on_a_read_only_mount_is_named_not_an_install_problem(tmp_path):
    """FLASHINFER_WORKSPACE_BASE on a real read-only tmpfs (mounted in the test's own dir,
    unmounted after): the real target's FlashInfer fails to make its workspace on import.
    warmup says so, naming the workspace, exit 2; it said "OSError(30, 'Read-only file
    system')" with the hint to install flashinfer-python in the target (found by QA)."""
    from warmup_helpers import build_env, target_venv

    py = target_venv()
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "none", str(ro)]).returncode:
        pytest.skip("cannot mount a tmpfs here (tests run as root in CI)")
    try:
        env = build_env(py.parent.parent, ro)
        r = run_cli(["warmup", "--python", str(py), "--modules", "single-decode:f16:64",
                     "--no-load"], env=env, timeout=240)
    finally:
        subprocess.run(["umount", str(ro)], check=True)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert f"FlashInfer cannot write its workspace {ro}/.cache/flashinfer" in r.stderr
    assert "Read-only file system" in r.stderr and "FLASHINFER_WORKSPACE_BASE" in r.stderr
    assert "install flashinfer" not in r.stderr and "Traceback" not in r.stderr


def test_lock_holders_reads_proc_locks(tmp_path):
    lock = tmp_path / "cached_ops" / "tmp" / "m.lock"
    h = hold_flock(lock)
    try:
        assert lock_holders(str(lock)) == [h.pid]
        assert lock_holders(str(tmp_path / "nope.lock")) == []
    finally:
        kill_and_wait(h)
    assert lock_holders(str(lock)) == []


def test_tree_watch_busy_vs_idle(tmp_path):
    """A process burning CPU counts as progress; one sleeping does not; a new file does."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(100)"])
    try:
        for proc, expect in ((busy, True), (idle, False)):
            w = TreeWatch(proc.pid, [str(tmp_path)])
            w.sample(time.monotonic())
            time.sleep(1.5)  # let the interpreter finish starting up
            w.sample(time.monotonic())
            time.sleep(1.0)
            s = w.sample(time.monotonic())
            assert s.progressed is expect, (s, expect)
        (tmp_path / "x.cuda.o").write_bytes(b"1")
        time.sleep(0.2)
        assert w.sample(time.monotonic()).why.startswith("file")
    finally:
        for p in (busy, idle):
            p.kill()
            p.wait()
    assert alive([busy.pid, idle.pid]) == []


def test_check_and_clear_incomplete(box, tmp_path):
    """--check and diagnose agree (the probe decides); --clear-incomplete moves through the
    fix layer (one journal) and leaves a dir whose lock a live process holds."""
    from conftest import DECODE, FA2, FA3

    ws = box.workspace()
    box.module(ws, DECODE, so="good")
    bad = box.module(ws, FA3, so="missing", depfiles=1)
    busy = box.module(ws, FA2, so="truncated")
    env = box.env(XDG_STATE_HOME=str(tmp_path / "state"))
    holder = hold_flock(ws / "cached_ops" / "tmp" / f"{FA2}.lock")
    try:
        r = run_cli(["warmup", "--check"], env=env)
        d = run_cli(["diagnose", "--json"], env=env)
        r2 = run_cli(["warmup", "--clear-incomplete"], env=env)
    finally:
        kill_and_wait(holder)
    assert r.returncode == 1, r.stderr
    assert "Found 1 compiled kernel(s), 1 incomplete" in r.stdout
    assert f"INCOMPLETE  no .so: {FA3}" in r.stdout
    assert f"BUSY        its lock is held by pid {holder.pid}: {FA2}" in r.stdout
    diag = [f["subject"] for f in json.loads(d.stdout)["findings"]
            if f["id"] == "cache-incomplete-module"]
    assert diag == [str(bad)], diag
    assert r2.returncode == 0, r2.stderr
    assert not bad.exists(), r2.stdout
    moved = list((ws / "fidoctor-quarantine").glob(f"*/{FA3}"))
    assert len(moved) == 1 and (moved[0] / "build.ninja").exists()
    assert busy.exists() and f"left {busy}: its lock is held by pid {holder.pid}" in r2.stdout
    assert (ws / "cached_ops" / DECODE / f"{DECODE}.so").exists()
    txid = moved[0].parent.name
    assert f"fidoctor undo --id {txid}" in r2.stdout
    h = run_cli(["history", "--json"], env=env)
    assert [row["command"] for row in json.loads(h.stdout)] == ["warmup"]
    u = run_cli(["undo"], env=env)  # the fix layer's plain undo brings it back
    assert u.returncode == 0, (u.stdout, u.stderr)
    assert bad.exists() and not moved[0].exists() and (bad / "build.ninja").exists()


def test_good_so_with_leftover_depfile_check_and_diagnose_agree(box, tmp_path):
    """The copies used to disagree: a loadable .so beside a leftover *.o.d was silent in
    diagnose and "incomplete" in --check. The probe's answer (complete) is the answer."""
    from conftest import DECODE

    ws = box.workspace()
    mod = box.module(ws, DECODE, so="good", depfiles=1)
    env = box.env(XDG_STATE_HOME=str(tmp_path / "state"))
    r = run_cli(["warmup", "--check", "--json"], env=env)
    d = run_cli(["diagnose", "--json"], env=env)
    c = run_cli(["warmup", "--clear-incomplete"], env=env)
    assert r.returncode == 0, r.stdout
    rows = json.loads(r.stdout)["workspaces"][0]["modules"]
    assert [(m["name"], m["state"]) for m in rows] == [(DECODE, "ok")]
    assert "cache-incomplete-module" not in [f["id"] for f in json.loads(d.stdout)["findings"]]
    assert c.returncode == 0 and "no incomplete module dirs" in c.stdout
    assert mod.exists() and (mod / f"{DECODE}.so").exists()


def test_check_empty_cache(tmp_path):
    env = dict(os.environ, FLASHINFER_WORKSPACE_BASE=str(tmp_path))
    r = run_cli(["warmup", "--check", "--json"], env=env)
    assert r.returncode == 0 and json.loads(r.stdout) == {"workspaces": [], "findings": []}


def test_child_script_is_standalone():
    """child.py runs in the target: it must not import fidoctor, and must parse as 3.9."""
    import ast

    src = Path("fidoctor/warmup/child.py").read_text()
    tree = ast.parse(src, feature_version=(3, 9))
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
             for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree)
              if isinstance(n, ast.ImportFrom) and n.module}
    assert "fidoctor" not in names
    assert names <= {"inspect", "json", "os", "re", "sys", "time", "traceback", "torch",
                     "flashinfer", "filelock"}, names


def test_once_flag_holds_only_while_request_and_modules_are_unchanged(box, tmp_path):
    """--once decides from the flag alone (no target started): same request, every .so it
    recorded unchanged (size, mtime) and still an ELF, the same build environment and the
    same flashinfer/torch package files (before: a changed environment or another FlashInfer
    release in the venv still said "nothing to do"). Found by QA."""
    from conftest import DECODE

    from fidoctor.warmup import cache

    ws = box.workspace()
    mod = box.module(ws, DECODE, so="good")
    so = mod / f"{DECODE}.so"
    flag = tmp_path / "flags" / "warm"
    pkg = tmp_path / "site" / "flashinfer" / "__init__.py"  # the target's package file
    pkg.parent.mkdir(parents=True)
    pkg.write_text("__version__ = '0.7.2.post1'\n")
    env = box.env()
    expect = {"python": "/venv/bin/python", "modules": "", "arch": "9.0a",
              "disable_sm90": False, "workspace_base": str(box.base),
              "build_env": cache.build_env(env)}
    result = {"modules": [{"name": DECODE, "module_dir": str(mod)}],
              "target": {"package_files": {"flashinfer": str(pkg)}}}
    cache.write_flag(str(flag), result, expect)
    assert "nothing to do" in cache.once_satisfied(str(flag), expect)
    assert cache.once_satisfied(str(flag), dict(expect, arch="10.0a")) is None
    assert cache.once_satisfied(str(flag), dict(expect, workspace_base="/elsewhere")) is None
    # Another environment writes another build.ninja (ninja would relink: the issue's
    # FLASHINFER_EXTRA_LDFLAGS case), another toolkit too: the warm path must not say ready.
    bare = {k: v for k, v in env.items() if k != "FLASHINFER_EXTRA_LDFLAGS"}
    assert cache.once_satisfied(str(flag), dict(expect, build_env=cache.build_env(bare))) is None
    moved = dict(env, CUDA_HOME=os.path.realpath(env["CUDA_HOME"]) + "/../cuda-11.8")
    assert cache.once_satisfied(str(flag), dict(expect, build_env=cache.build_env(moved))) is None
    # Another FlashInfer release installed into the same venv (pip replaces the files; the
    # .so files the flag lists, under the old version's workspace, are all still there).
    pkg.unlink()
    pkg.write_text("__version__ = '0.7.4'\n")
    assert cache.once_satisfied(str(flag), expect) is None
    cache.write_flag(str(flag), result, expect)
    assert "nothing to do" in cache.once_satisfied(str(flag), expect)
    st = so.stat()
    os.utime(so, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # rebuilt since
    assert cache.once_satisfied(str(flag), expect) is None
    cache.write_flag(str(flag), result, expect)
    assert cache.once_satisfied(str(flag), expect)
    st2 = so.stat()
    so.write_bytes(b"not an ELF" + bytes(st2.st_size - 10))  # same size and mtime, broken
    os.utime(so, ns=(st2.st_atime_ns, st2.st_mtime_ns))
    assert so.stat().st_size == st2.st_size
    assert cache.once_satisfied(str(flag), expect) is None
    flag.write_text("{garbage")
    assert cache.once_satisfied(str(flag), expect) is None


def test_once_flag_that_is_a_fifo_or_a_dir_is_refused_up_front(box, tmp_path):
    """``--once FIFO`` blocked forever on its first read (no budget, no output); ``--once DIR``
    ran the warmup and then died in an internal error on the rename. Both are bad input:
    exit 2, one line, before any target is started."""
    fifo = tmp_path / "flag.fifo"
    os.mkfifo(fifo)
    d = tmp_path / "flagdir"
    d.mkdir()
    for flag, kind in ((fifo, "fifo"), (d, "dir")):
        r = run_cli(["warmup", "--once", str(flag), "--arch", "9.0a"], env=box.env(),
                    timeout=60)
        assert r.returncode == 2, r.stdout + r.stderr
        assert f"it is a {kind}" in r.stderr and "internal error" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) <= 2, r.stderr
    assert sorted(os.listdir(tmp_path)) == ["base", "flag.fifo", "flagdir"]  # no temp left


def test_once_flag_on_a_read_only_mount_is_a_one_line_error_not_a_crash(box, tmp_path):
    """A real read-only tmpfs: writing the flag raised a bare OSError (an "internal error" of
    a warmup that had succeeded); now it is fidoctor's one-line error, which the command
    turns into a warning (the kernels are ready; the next start checks again)."""
    from conftest import DECODE
    from fs_helpers import remount, tmpfs

    from fidoctor.warmup import cache

    mod = box.module(box.workspace(), DECODE, so="good")
    with tmpfs(tmp_path / "ro", "1m") as ro:
        remount(ro, "ro")
        with pytest.raises(FidoctorError) as e:
            cache.write_flag(str(ro / "warm"), {"modules": [{"name": DECODE,
                                                             "module_dir": str(mod)}]}, {})
        assert "Read-only file system" in e.value.message
        assert os.listdir(ro) == []


def test_plan_on_sigterm_ends_the_hung_target_it_started(box, tmp_path, procs):
    """``warmup --plan`` asks the target (a child in its own session, 180 s budget). A
    SIGTERM (``timeout 60 fidoctor warmup --plan``, docker stop) killed fidoctor and left a
    hung target interpreter running forever; builds already turned SIGTERM into the Ctrl-C
    clean-up. Now --plan does too: exit 130, the child's tree ended."""
    import psutil
    from target_helpers import misbehaving_python

    # an interpreter stuck in its imports (behind a shell wrapper: two processes)
    hung = misbehaving_python(tmp_path / "python", "import time\ntime.sleep(600)\n",
                              exec_=False)
    p = procs.start([sys.executable, "-m", "fidoctor", "warmup", "--plan", "--python",
                     str(hung), "--arch", "9.0a"], env=box.env())
    kids: list = []
    deadline = time.monotonic() + 30
    while len(kids) < 2 and time.monotonic() < deadline:  # the target's sh and its sleep
        time.sleep(0.1)
        kids = psutil.Process(p.pid).children(recursive=True)
    assert len(kids) >= 2, "the target was never started"
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=30) == 130
    gone, alive_ = psutil.wait_procs(kids, timeout=5)
    assert alive_ == [], f"the hung target outlived fidoctor: {alive_}"


def _two_napping_ninjas(tmp_path, edges: int, nap: float, tagged: bool):
    """The target venv's ninja (a jobserver client; else skip) and two build dirs ``a`` and
    ``b`` of ``edges`` edges that each sleep ``nap`` s and log their start and end
    (``+a``/``-a`` when ``tagged``, else ``start``/``end``) to the returned log."""
    import shutil as _sh

    from warmup_helpers import target_venv

    from fidoctor.warmup.parallel import ninja_supports_jobserver

    ninja = _sh.which("ninja", path=str(target_venv().parent))
    if not ninja or not ninja_supports_jobserver(ninja):
        pytest.skip("no jobserver-capable ninja in the target venv")
    log = tmp_path / "edges.log"
    for m in ("a", "b"):
        d = tmp_path / m
        d.mkdir()
        start, end = (f"+{m}", f"-{m}") if tagged else ("start", "end")
        rule = (f"rule nap\n  command = echo {start} >> {log} && sleep {nap} && "
                f"echo {end} >> {log} && touch $out\n")
        (d / "build.ninja").write_text(rule + "".join(f"build {d}/o{i}: nap\n"
                                                      for i in range(edges)))
    return ninja, log


def test_one_job_budget_caps_every_ninja_together(tmp_path):
    """Two real ninjas (the target venv's, a jobserver client) draw from one pool: with a
    token held back for the second one's implicit job, never more than ``total`` edges run
    at once (each edge records its start and end; the overlap is counted, not timed)."""
    from fidoctor.warmup.parallel import Budget

    ninja, log = _two_napping_ninjas(tmp_path, edges=4, nap=0.4, tagged=False)
    b = Budget(3, True, "")
    b.open()
    try:
        assert b.reconcile(2) and b.held == 1  # two ninjas: one token held back
        env = b.env(dict(os.environ))
        ps = [subprocess.Popen([ninja, "-C", str(tmp_path / m)], env=env,
                               stdout=subprocess.DEVNULL) for m in ("a", "b")]
        assert [p.wait(timeout=60) for p in ps] == [0, 0]
        assert b.reconcile(0) and b.held == 0
        assert os.read(b._fd, 16) == b"++"  # every token is back in the pool
        assert not b.reconcile(2)  # none left to hold back now
    finally:
        b.close()
    running = peak = 0
    for ln in log.read_text().split():
        running += 1 if ln == "start" else -1
        peak = max(peak, running)
    assert peak <= 3 and log.read_text().count("start") == 8


def test_twins_share_the_free_slots_evenly():
    """Modules of one kind admitted together get even lanes, never more than their edges."""
    from fidoctor.warmup.parallel import shares

    assert shares([10, 10], 16) == [8, 8]          # the H200's two FA3 modules
    assert shares([10, 10, 10], 16) == [6, 5, 5]
    assert shares([3, 10], 8) == [3, 5]            # a small twin leaves its rest to the other
    assert shares([2, 2], 3) == [2, 1]
    assert shares([4, 4], 1) == [1, 1]             # every ninja has its own implicit job


def test_staged_tokens_are_each_ninjas_first_lanes(tmp_path):
    """Two real ninjas (the target venv's jobserver client) started one after the other with
    two tokens staged for each: each runs three edges at once (its implicit job + two), the
    first does not take the pool; the reserve goes back afterwards (counted, not timed)."""
    from fidoctor.warmup.parallel import Budget

    ninja, log = _two_napping_ninjas(tmp_path, edges=6, nap=0.6, tagged=True)
    b = Budget(8, True, "")
    b.open()
    try:
        assert b.reconcile(2) and b.held == 1 and b.idle() == 6
        env = b.env(dict(os.environ))
        ps = []
        for m in ("a", "b"):
            assert b.stage(2) == 2 and b.idle() == 2
            ps.append(subprocess.Popen([ninja, "-C", str(tmp_path / m)], env=env,
                                       stdout=subprocess.DEVNULL))
            b.wait_taken(10.0)
            assert b.idle() == 0, "the ninja took what was staged for it"
        assert b.reserve == 2
        b.unstage()
        assert [p.wait(timeout=60) for p in ps] == [0, 0]
        assert b.reconcile(0) and b.reserve == 0 and b.idle() == 7  # every token is back
    finally:
        b.close()
    running = peak = 0
    for ln in log.read_text().split():
        running += 1 if ln[0] == "+" else -1
        peak = max(peak, running)
    first = log.read_text().split()[:6]
    assert first.count("+a") == 3 and first.count("+b") == 3, first
    assert peak <= 8 and log.read_text().count("+") == 12


def test_idle_tokens_admit_the_next_module():
    """With a jobserver, the next module starts once a few tokens sit idle (a sleeping ninja
    takes none), however many unfinished edges the running ones still have; without one,
    by unfinished edges as before. Memory still decides."""
    from fidoctor.warmup.parallel import IDLE_LANES, Admission, Budget, Slot
    from fidoctor.warmup.result import ModuleResult

    def slot(edges: int, kind: str = "fa2") -> Slot:
        return Slot(ModuleResult(key=f"{kind}:{edges}"), {"edges": edges}, kind, 1.0)

    running, fa2, decode = [slot(11, "fa3"), slot(11, "fa3")], slot(11), slot(4, "decode")
    big = Admission(Budget(16, True, ""), 1 << 40)
    assert not big.fits(running, fa2, idle=IDLE_LANES - 1)
    assert big.fits(running, fa2, idle=IDLE_LANES)      # 20 unfinished edges or not
    assert big.fits(running, decode, idle=3)             # as many as its compile edges
    assert not big.fits(running, fa2)                    # by unfinished edges: 20 ≥ 16 …
    running[0].edges_done = running[1].edges_done = 5
    assert big.fits(running, fa2)                        # … until fewer than 16 are left
    assert Admission(Budget(2, True, ""), 1 << 40).fits([slot(4)], decode, idle=1)
    assert not Admission(Budget(16, True, ""), 2 << 30).fits([slot(11, "fa3")], fa2, idle=8)


def test_check_calls_a_good_module_whose_lock_a_live_process_holds_busy(box, tmp_path):
    """A loadable module whose FlashInfer lock a live process holds: diagnose says
    build-lock-held (a server loading it waits on that lock first), --check said "ok" (its
    schema promises "busy: a live process … holds its lock"). Now busy, still complete;
    once the holder is gone, ok again. Found by QA (the fixture walk of --check vs diagnose)."""
    from conftest import DECODE

    ws = box.workspace()
    box.module(ws, DECODE, so="good")
    env = box.env(XDG_STATE_HOME=str(tmp_path / "state"))
    holder = hold_flock(ws / "cached_ops" / "tmp" / f"{DECODE}.lock")
    try:
        r = run_cli(["warmup", "--check", "--json"], env=env)
        t = run_cli(["warmup", "--check"], env=env)
        d = run_cli(["diagnose", "--json"], env=env)
    finally:
        kill_and_wait(holder)
    held = [f for f in json.loads(d.stdout)["findings"] if f["id"] == "build-lock-held"]
    assert len(held) == 1 and held[0]["subject"].endswith(f"{DECODE}.lock"), d.stdout[-2000:]
    [row] = json.loads(r.stdout)["workspaces"][0]["modules"]
    assert (row["state"], row["complete"]) == ("busy", True), row
    assert row["problem"] == f"its lock is held by pid {holder.pid}"
    assert r.returncode == 0 and t.returncode == 0  # busy is not incomplete: no exit 1
    assert f"BUSY        its lock is held by pid {holder.pid}: {DECODE}" in t.stdout, t.stdout
    r = run_cli(["warmup", "--check", "--json"], env=env)
    [row] = json.loads(r.stdout)["workspaces"][0]["modules"]
    assert (row["state"], row["complete"]) == ("ok", True), row
