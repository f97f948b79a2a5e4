"""Helpers for the fix/undo tests: tree hashes, real CLI children, pause points."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest
from proc_helpers import pid_alive


def tree_hashes(root: Path) -> Dict[str, str]:
    """sha256 of every file, the target of every symlink, and every dir under ``root``."""
    out: Dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                out[rel] = "link:" + os.readlink(p)
            elif os.path.isdir(p):
                out[rel] = "dir"
            else:
                with open(p, "rb") as f:
                    out[rel] = hashlib.sha256(f.read()).hexdigest()
    return out


def fix_env(box, state: Path, **extra: str) -> Dict[str, str]:
    """The box's environment with fidoctor's state dir under the test's tmp dir."""
    return box.env(XDG_STATE_HOME=str(state), **extra)


def cli(args: List[str], env: Dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fidoctor", *args], env=env,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def spawn_paused(args: List[str], env: Dict[str, str], point: str) -> subprocess.Popen:
    """A real ``fidoctor`` child that stops at ``point`` (FIDOCTOR_TEST_PAUSE_AT, test-only)."""
    env = dict(env, FIDOCTOR_TEST_PAUSE_AT=point, FIDOCTOR_TEST_PAUSE_S="120")
    return subprocess.Popen([sys.executable, "-m", "fidoctor", *args], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_paused(proc: subprocess.Popen, state: Path, point: str, limit: float = 90) -> None:
    marker = state / "fidoctor" / f"test-paused-{point}"
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if marker.exists():
            return
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"fidoctor exited ({proc.returncode}) before {point}:\n{out}\n{err}")
        time.sleep(0.05)
    pytest.fail(f"fidoctor never reached pause point {point}")


def kill_and_reap(proc: Optional[subprocess.Popen]) -> None:
    """SIGKILL the child's group, reap it, and assert it is gone."""
    if proc is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    assert not pid_alive(proc.pid)


def finding_ids(env: Dict[str, str], python: Optional[str] = None) -> List[str]:
    import json

    args = ["diagnose", "--json"] + (["--python", python] if python else [])
    r = cli(args, env)
    assert r.returncode in (0, 1), r.stderr
    return sorted(f["id"] for f in json.loads(r.stdout)["findings"])
