"""QA of terminate-build-tree against processes that are not ours to end (real processes, a real
mount namespace made with unshare(1), real signals)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from conftest import DECODE
from fix_helpers import cli, fix_env
from nobody_helpers import nobody_python
from proc_helpers import (
    SERVER,
    fakecc,
    make_fifo,
    reparented,
    same_alive,
    script,
    wait_for,
    write_module,
)

pytestmark = pytest.mark.timeout(180)


def test_a_stuck_build_of_a_containers_own_cache_at_the_same_path_is_never_ended(
        box, procs, tmp_path):
    """A 'container' (its own mount namespace) has its own cache bind-mounted at the very path
    of ours and a build there is stuck and orphaned (its server SIGKILLed). From the host, its
    argv and cwd name our module dir; but it is not our cache. `fidoctor fix --use
    terminate-build-tree` on the host must not signal it (before: it was SIGKILLed)."""
    if not shutil.which("unshare"):
        pytest.skip("unshare(1) not installed")
    ws = box.workspace()
    fifo = make_fifo(tmp_path / "never.fifo")
    bindir = fakecc()
    write_module(ws, DECODE, f"--fifo {fifo}")
    theirs = tmp_path / "container-cache"
    shutil.copytree(ws, theirs, symlinks=True)  # the same names, other inodes
    server_py = script(procs.tmp, "server.py", SERVER)
    server = procs.start(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         'mount --bind "$1" "$2" && shift 2 && exec "$@"', "sh", str(theirs), str(ws),
         sys.executable, str(server_py), str(ws / "cached_ops" / "tmp" / f"{DECODE}.lock"),
         str(ws / "cached_ops" / DECODE), str(ws / "flashinfer_jit.log")], env=box.env())
    ninja = procs.find("ninja")
    nvcc = procs.find("nvcc")
    assert bindir
    server.kill()
    server.wait()
    wait_for(lambda: reparented(ninja, server.pid), what="ninja re-parented")
    theirs_pids = {p: psutil.Process(p).create_time() for p in (ninja, nvcc)}
    env = fix_env(box, tmp_path / "state")
    r = cli(["fix", "--yes", "--no-warmup", "--only", "build-process-stuck",
             "--use", "terminate-build-tree"], env, timeout=150)
    assert all(same_alive(p, ct) for p, ct in theirs_pids.items()), r.stdout + r.stderr
    assert "another mount namespace" in r.stdout + r.stderr, r.stdout + r.stderr
    assert "Traceback" not in r.stderr


def test_a_stuck_build_of_another_uid_is_refused_as_not_ours_not_blamed_on_io(
        built_so, procs, tmp_path):
    """fidoctor run as `nobody` on a cache where root's orphaned build is stuck (a real tree,
    real uids): it cannot signal another user's processes. It said 'pids [...] survived SIGKILL
    (uninterruptible I/O?)' after trying; it now says whose they are before signalling anything
    (exit 2), and the tree is untouched."""
    import tempfile

    from conftest import Box
    from proc_helpers import start_server

    top = Path(tempfile.mkdtemp(prefix="fidoctor-qa-uid-", dir="/tmp"))
    try:
        top.chmod(0o755)  # nobody must reach the workspace (pytest's tmp dirs are 0700)
        box = Box(top / "base", built_so)
        ws = box.workspace()
        fifo = make_fifo(top / "never.fifo")
        fakecc()
        write_module(ws, DECODE, f"--fifo {fifo}")
        server = start_server(procs, ws, DECODE, box.env())
        ninja = procs.find("ninja")
        nvcc = procs.find("nvcc")
        server.kill()
        server.wait()
        wait_for(lambda: reparented(ninja, server.pid), what="ninja re-parented")
        roots = {p: psutil.Process(p).create_time() for p in (ninja, nvcc)}
        for d in ("state", "xc"):
            (top / d).mkdir()
            os.chown(top / d, NOBODY, NOBODY)
        env = box.env(XDG_STATE_HOME=str(top / "state"), XDG_CACHE_HOME=str(top / "xc"),
                      HOME=str(top / "xc"))
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        r = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                            "--clear-groups", "--inh-caps=-all", "--bounding-set=-all",
                            nobody_python(), "-m", "fidoctor", "fix", "--yes", "--no-warmup",
                            "--only", "build-process-stuck", "--use", "terminate-build-tree"],
                           env=env, capture_output=True, text=True, timeout=150,
                           stdin=subprocess.DEVNULL, cwd="/")
        out = r.stdout + r.stderr
        assert all(same_alive(p, ct) for p, ct in roots.items()), out
        assert "Traceback" not in r.stderr and "uninterruptible" not in out, out
        assert "uid 0" in out and r.returncode == 2, out
    finally:
        shutil.rmtree(top, ignore_errors=True)


NOBODY = 65534
