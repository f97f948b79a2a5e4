"""Issue 14, class 9 (budgets): target subprocesses, --pid of what is no server, huge files.

Timings are not asserted here (bench/ and the report carry them); the tests check the
mechanisms: output is capped and the child killed, a zombie or kernel thread is a
one-line error, a 1 TiB sparse module is fingerprinted (pytest-timeout would catch a
full hash, which takes many minutes).
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
from conftest import DECODE, FA2, run_cli
from fix_helpers import cli, fix_env
from target_helpers import misbehaving_python

from fidoctor import proc
from fidoctor.txn.safety import HASH_CAP, manifest

pytestmark = pytest.mark.timeout(120)


def test_a_flooding_target_is_stopped_at_the_output_cap(tmp_path):
    r = proc.run(["yes", "A" * 100], timeout=30)
    assert "printed more than" in r.error and not r.ok
    assert len(r.stdout) <= proc.OUTPUT_CAP
    assert "printed more than" in r.describe()


def test_a_flooding_python_is_an_unusable_target_not_a_memory_hog(tmp_path, box):
    flood = misbehaving_python(tmp_path / "python", "import os\nline = b'A' * 100 + b'\\n'\n"
                               "while True:\n    os.write(1, line * 100)\n")
    r = run_cli(["diagnose", "--json", "--python", str(flood)], env=box.env(), timeout=60)
    doc = json.loads(r.stdout)
    f = [x for x in doc["findings"] if x["id"] == "target-python-unusable"]
    assert f and "printed more than" in json.dumps(f[0])


def test_a_hanging_python_is_given_up_on(tmp_path, box):
    hang = misbehaving_python(tmp_path / "python", "import time\ntime.sleep(100)\n")
    r = run_cli(["diagnose", "--json", "--python", str(hang)], env=box.env(), timeout=60)
    doc = json.loads(r.stdout)
    assert any(x["id"] == "target-python-unusable" for x in doc["findings"])
    assert "timed out" in r.stdout


def test_pid_of_a_zombie_is_one_line(tmp_path):
    z = subprocess.Popen(["true"])
    try:
        for _ in range(100):
            with open(f"/proc/{z.pid}/stat") as f:
                if f.read().rsplit(") ", 1)[1][0] == "Z":
                    break
            time.sleep(0.02)
        r = run_cli(["diagnose", "--pid", str(z.pid)])
        assert r.returncode == 2 and "zombie" in r.stderr and "Traceback" not in r.stderr
        assert "internal error" not in r.stderr
    finally:
        z.wait()


def _kernel_thread():
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b") ", 1)[1].split()
            if int(fields[6]) & 0x00200000:
                return int(name)
        except (OSError, IndexError, ValueError):
            continue
    return None


def test_pid_of_a_kernel_thread_is_one_line():
    kt = _kernel_thread()
    if kt is None:
        pytest.skip("no kernel thread visible in this pid namespace")
    r = run_cli(["snapshot", "--pid", str(kt)])
    assert r.returncode == 2 and "kernel thread" in r.stderr and "Traceback" not in r.stderr


def test_huge_sparse_module_is_fingerprinted_not_hashed_before_the_rename(box, tmp_path):
    ws = box.workspace()
    box.module(ws, DECODE)
    mod = box.module(ws, FA2, so="text")
    big = mod / "huge.o"
    with open(big, "wb") as f:
        f.truncate(1 << 40)  # 1 TiB, sparse: a full sha256 would take many minutes
    m = manifest(str(mod))
    assert "fingerprint" in m["huge.o"] and "sha256" not in m["huge.o"]
    assert m["huge.o"]["size"] == 1 << 40 > HASH_CAP
    env = fix_env(box, tmp_path / "state")
    r = cli(["fix", "--yes", "--no-warmup", "--only", "cache-incomplete-module"], env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not mod.exists()
    u = cli(["undo"], env)
    assert u.returncode == 0, u.stdout + u.stderr
    assert "differs" not in u.stdout
    assert os.stat(big).st_size == 1 << 40


def test_cache_scan_past_its_budget_says_what_it_left_and_is_never_healthy(box):
    """10,000 modules on a slow disk timed the whole cache section out (every JIT probe
    blind). Past its deadline the scan now stops, newest dirs first, and says how many it
    left; a diagnosis of such a snapshot is never "healthy"."""
    import time as _t

    from conftest import snapshot_of

    from fidoctor.diagnosis import diagnose
    from fidoctor.flashinfer.layout import discover_workspaces
    from fidoctor.snapshot.gather import cache

    ws = box.workspace()
    names = [f"norm_{i:03d}" for i in range(cache.NEWEST_FIRST_OVER + 20)]
    for i, n in enumerate(names):
        d = box.module(ws, n, objects=1, lock=False)
        os.utime(d, (1_600_000_000 + i, 1_600_000_000 + i))
    full = cache.scan_workspace(discover_workspaces(str(box.root))[0], _t.monotonic() + 600)
    assert "not_scanned" not in full and [m["name"] for m in full["modules"]] == names
    order = [e.name for e in cache._newest_first(list(os.scandir(ws / "cached_ops")))]
    assert [n for n in order if n != "tmp"][0] == names[-1]  # the newest module dir first
    cut = cache.scan_workspace(discover_workspaces(str(box.root))[0], _t.monotonic() - 1)
    assert cut["not_scanned"]["count"] == len(names) and cut["modules"] == []
    snap = snapshot_of(box)
    snap.sections["cache"].data["workspaces"] = [cut]
    diag = diagnose(snap)
    assert diag.exit_code == 2 and "not scanned" in (diag.unchecked or "")
