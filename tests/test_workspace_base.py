"""Which cache a server really uses: ``FLASHINFER_WORKSPACE_BASE`` empty or relative, ``HOME``
unset — computed as FlashInfer's ``jit/env.py`` does (every release:
``Path(os.getenv("FLASHINFER_WORKSPACE_BASE", Path.home()))``), in the server's cwd and uid.

Real processes: a server started in its own cwd with a relative base over a real broken module,
one with an empty base, and one running as uid 65534 without ``HOME``.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DECODE, Box, run_cli
from proc_helpers import wait_for

pytestmark = pytest.mark.timeout(180)


def _env_without(*names, **extra):
    env = {k: v for k, v in os.environ.items() if k not in names}
    env.update(extra)
    return env


@pytest.mark.parametrize("base", ["ws", ""])
def test_a_relative_or_empty_base_is_under_the_servers_cwd(tmp_path, built_so, procs, base):
    """``FLASHINFER_WORKSPACE_BASE=ws`` (or set but empty: ``Path("")`` is the cwd): FlashInfer
    caches under the server's cwd. fidoctor joined it to its *own* cwd (empty: fell back to
    HOME) and judged another cache: the broken module was never seen."""
    srv = tmp_path / "srv"
    box = Box(srv / base if base else srv, built_so)
    ws = box.workspace()
    box.module(ws, DECODE, so="truncated")
    ready = tmp_path / "ready"
    server = procs.start([sys.executable, "-c", f"import os, time; os.chdir({str(srv)!r}); "
                          f"open({str(ready)!r}, 'w').close(); time.sleep(600)"],
                         env=_env_without("FLASHINFER_WORKSPACE_BASE",
                                          FLASHINFER_WORKSPACE_BASE=base))
    wait_for(ready.exists, what="the server in its cwd")
    elsewhere = tmp_path / "elsewhere"  # fidoctor runs from another dir
    elsewhere.mkdir()
    r = subprocess.run([sys.executable, "-m", "fidoctor", "diagnose", "--json", "--pid",
                        str(server.pid)], capture_output=True, text=True, timeout=120,
                       cwd=str(elsewhere))
    doc = json.loads(r.stdout)
    assert doc["target"]["flashinfer_root"] == str(box.root), doc["target"]["flashinfer_root"]
    assert "cache-incomplete-module" in [f["id"] for f in doc["findings"]], doc["findings"]


def test_no_home_is_the_servers_uid_home_not_fidoctors(tmp_path, procs):
    """A server without ``HOME`` (cron, a bare ``env -i``) running as uid 65534: FlashInfer's
    ``Path.home()`` is that uid's passwd home; fidoctor took its own ``~``."""
    from nobody_helpers import nobody_python

    py = nobody_python()
    server = procs.start(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", py,
                          "-c", "import time; time.sleep(600)"],
                         env={"PATH": "/usr/bin:/bin"})
    wait_for(lambda: "python" in os.readlink(f"/proc/{server.pid}/exe"),
             what="setpriv to exec the python")
    r = run_cli(["diagnose", "--json", "--pid", str(server.pid)], timeout=120)
    doc = json.loads(r.stdout)
    want = os.path.join(pwd.getpwuid(65534).pw_dir, ".cache", "flashinfer")
    assert doc["target"]["flashinfer_root"] == os.path.normpath(want), doc["target"]


@pytest.mark.parametrize("blocker", ["fifo", "file"])
def test_a_file_or_fifo_where_the_cache_must_be(tmp_path, blocker):
    """``FLASHINFER_WORKSPACE_BASE`` naming a FIFO said "uid 0 cannot write … Permission
    denied", "… is a other, not a directory", offered ``chown -R`` of the FIFO (which changes
    nothing) and a cache-unreadable "…: error" with more chowns; a regular file at
    ``.cache/flashinfer`` (FlashInfer's mkdir: File exists) was not seen at all."""
    if blocker == "fifo":
        base = tmp_path / "base.fifo"
        os.mkfifo(base)
        words = f"{base} is a FIFO (named pipe), not a directory"
    else:
        base = tmp_path / "base"
        (base / ".cache").mkdir(parents=True)
        (base / ".cache" / "flashinfer").write_text("x\n")
        words = f"{base}/.cache/flashinfer is a regular file, not a directory"
    r = run_cli(["diagnose", "--json"], timeout=120,
                env=dict(os.environ, FLASHINFER_WORKSPACE_BASE=str(base)))
    doc = json.loads(r.stdout)
    f = [x for x in doc["findings"] if x["id"] == "cache-not-writable"]
    assert f, [x["id"] for x in doc["findings"]]
    assert words in f[0]["title"] and "Permission denied" not in f[0]["title"], f[0]["title"]
    cmds = [c for fx in f[0]["fixes"] for c in fx["commands"]]
    assert not any(c.startswith("chown") for c in cmds), cmds
    assert "cache-unreadable" not in [x["id"] for x in doc["findings"]]


def test_a_base_path_that_is_not_utf8(tmp_path, built_so, procs):
    """A server whose ``FLASHINFER_WORKSPACE_BASE`` holds a Latin-1 byte (``café`` made on a
    Latin-1 box): ``/proc/PID/environ`` was decoded with U+FFFD, the root named no directory,
    and the broken module there was "no FlashInfer cache" (flashinfer-not-installed)."""
    made = Box(tmp_path / "cafe", built_so)  # built under a UTF-8 name, then renamed
    made.module(made.workspace(), DECODE, so="truncated")
    base = os.fsdecode(os.fsencode(str(tmp_path)) + b"/caf\xe9")
    os.rename(made.base, base)
    box = Box(Path(base), built_so)
    env = {os.fsencode(k): os.fsencode(v) for k, v in os.environ.items()}
    env[b"FLASHINFER_WORKSPACE_BASE"] = os.fsencode(base)
    server = procs.start([sys.executable, "-c", "import time; time.sleep(600)"], env=env)
    r = run_cli(["diagnose", "--json", "--pid", str(server.pid)], timeout=120)
    doc = json.loads(r.stdout)
    assert doc["target"]["flashinfer_root"] == str(box.root), ascii(doc["target"]["flashinfer_root"])
    assert "cache-incomplete-module" in [f["id"] for f in doc["findings"]], doc["findings"]
