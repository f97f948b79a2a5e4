"""QA of `cache import` + `undo` with real FlashInfer modules (the module built once per machine by
the real `fidoctor warmup --arch 9.0a`, imported into a second real venv; see cache_helpers)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cache_helpers import target_env, workspace_of
from conftest import run_cli
from test_cache_real import built, bundle, do, module_dir, t2, tree  # noqa: F401 - fixtures
from warmup_helpers import build_env, target_venv

pytestmark = pytest.mark.slow
ARCH = ["--arch", "9.0a"]


def test_undo_of_an_import_never_deletes_a_module_rebuilt_since(bundle, t2, tmp_path):  # noqa: F811
    """The user imported a bundle, then FlashInfer rebuilt the module in place (its .so and
    .ninja_log rewritten by a real build). `fidoctor undo` must not take that newer module away,
    and must never delete it: the module dir stays where it is, byte for byte."""
    base = tmp_path / "base"
    r = do(t2, base, "import", str(bundle))
    assert r.returncode == 0, r.stdout + r.stderr
    mod = module_dir(base)
    so = next(mod.glob("*.so"))
    rebuilt = so.read_bytes() + b"\0rebuilt"
    so.write_bytes(rebuilt)  # what a rebuild in place leaves: other bytes at the same path
    before = tree(mod)
    env = dict(os.environ, XDG_STATE_HOME=str(base.parent / "state"))
    r = run_cli(["undo"], env=env)
    assert "Traceback" not in r.stderr
    assert so.exists(), (r.stdout + r.stderr, list(workspace_of(base).rglob("*")))
    assert so.read_bytes() == rebuilt
    assert tree(mod) == before
    assert r.returncode == 1, r.stdout + r.stderr
    assert str(mod) in r.stdout + r.stderr


def _pauses(p, marker: Path, at_each) -> None:
    """Let a real paused import go on pause by pause; ``at_each(k)`` runs at the k-th pause."""
    k = 0
    for _ in range(1200):
        if p.poll() is not None:
            return
        if marker.exists():
            at_each(k)
            k += 1
            marker.unlink()
        time.sleep(0.05)
    raise AssertionError("the import never finished")


def test_import_does_not_follow_cached_ops_swapped_for_a_symlink_after_the_check(
        bundle, t2, tmp_path):  # noqa: F811
    """`cached_ops` replaced by a symlink to another directory between the move-in's preflight
    and its rename (a real import paused right after its journal intent): the module must not
    land in that other directory; the import stops, reverts, and says why."""
    base = tmp_path / "base"
    ws = workspace_of(base)
    (ws / "cached_ops").mkdir(parents=True)
    outside = tmp_path / "someone-elses"
    outside.mkdir()
    state = tmp_path / "state"
    env = target_env(t2, base, XDG_STATE_HOME=str(state), FIDOCTOR_TEST_PAUSE_AT="after-journal",
                     FIDOCTOR_TEST_PAUSE_S="60")

    def swap(k: int) -> None:
        if k == 1:  # step 1 is the module's move-in: its intent is written, its rename next
            os.rename(ws / "cached_ops", ws / "cached_ops.real")
            os.symlink(outside, ws / "cached_ops")

    p = subprocess.Popen([sys.executable, "-m", "fidoctor", "cache", "import", "--python",
                          str(t2["python"]), *ARCH, str(bundle)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _pauses(p, state / "fidoctor" / "test-paused-after-journal", swap)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert list(outside.iterdir()) == [], "the import moved a module through the symlink"
    assert p.returncode == 2, out + err
    assert "no longer a directory" in err and "Traceback" not in err
    assert list((ws / "cached_ops.real").iterdir()) == []


def test_export_of_a_module_dir_holding_a_1tb_sparse_file_refuses_it_without_reading(
        built, tmp_path):  # noqa: F811
    """A 1 TB sparse file (a core dump, a runaway write) in a module dir: export hashed it
    (an hour of zeros) and would then have copied it into the tar. It is now refused from its
    size (import takes no member over 1 GiB). The real export runs in a private mount namespace
    where a copy of the shared built workspace is bind-mounted over it (its build.ninja names
    absolute paths; the shared copy itself is never written)."""
    copy = tmp_path / "copy"
    shutil.copytree(built, copy, symlinks=True)
    core = module_dir(copy) / "core"
    with open(core, "wb") as f:
        f.truncate(1 << 40)
    py = target_venv()
    env = build_env(py.parent.parent, built)
    out = tmp_path / "out.tar"
    r = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         'mount --bind "$1" "$2" && shift 2 && exec "$@"', "sh", str(copy), str(built),
         sys.executable, "-m", "fidoctor", "cache", "export", "--python", str(py), *ARCH,
         "-o", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "1099511627776 bytes" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not list(tmp_path.glob("out.tar*"))


def test_a_member_declared_1tb_in_manifest_and_header_is_refused_by_its_size(
        bundle, t2, tmp_path):  # noqa: F811
    """The manifest and the tar header agree on 1 TB for an extra module file (no data follows):
    refused from the declared size before reading, and the message says what is wrong
    (it used to read '1099511627776 bytes, the manifest says 1099511627776')."""
    import io
    import json
    import tarfile

    big = 1 << 40
    name = None
    bad = tmp_path / "big.tar"
    with tarfile.open(bundle) as tin, open(bad, "wb") as raw:
        tout = tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115 - no close: no end blocks
        for m in tin.getmembers():
            data = tin.extractfile(m).read() if m.isreg() else b""
            if m.name == "manifest.json":
                doc = json.loads(data)
                mod = doc["modules"][0]
                name = f"cached_ops/{mod['name']}/core"
                mod["files"].append({"path": name, "sha256": "0" * 64, "size": big,
                                     "mode": 0o644, "mtime_ns": 0})
                data = json.dumps(doc).encode()
                m.size = len(data)
            tout.addfile(m, io.BytesIO(data))
        ti = tarfile.TarInfo(f"ws/{name}")
        ti.size = big
        raw.write(ti.tobuf(format=tarfile.PAX_FORMAT))  # a header, then the stream ends
    base = tmp_path / "base"
    (workspace_of(base) / "cached_ops").mkdir(parents=True)
    before = tree(tmp_path)
    r = do(t2, base, "import", str(bad))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "the manifest says" not in r.stderr and "more than a bundle member may hold" in \
        r.stderr, r.stderr
    assert tree(tmp_path) == before


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_export_to_a_full_disk_says_so_and_leaves_no_partial_bundle(built, tmp_path):  # noqa: F811
    """`cache export -o` onto a real 256 KiB tmpfs (the bundle is over 1 MB): it was 'internal
    error: OSError ENOSPC … this is a fidoctor bug'; now one line naming the disk, exit 2, and
    no partial file left on that disk."""
    full = tmp_path / "full"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(full)], check=True)
    try:
        py = target_venv()
        r = run_cli(["cache", "export", "--python", str(py), *ARCH, "-o", str(full / "b.tar")],
                    env=build_env(py.parent.parent, built))
        assert r.returncode == 2, r.stdout + r.stderr
        assert "internal error" not in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert "No space left" in r.stderr and "nothing was written" in r.stderr, r.stderr
        assert list(full.iterdir()) == []
    finally:
        subprocess.run(["umount", "-l", str(full)], check=False)
