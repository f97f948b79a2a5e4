"""cache-rebuild-pending on real FlashInfer 0.7.2.post1 modules and the real ninja.

The modules are written by FlashInfer with ``CUDA_HOME=/usr/local/cuda`` (a
symlink to /usr/local/cuda-13.0 here) and built by ninja (compiles replaced
by a launcher, see ninja_helpers); the target then resolves CUDA_HOME as
``/usr/local/cuda-13.0``: the same toolkit under another string, mode 6.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import run_cli
from ninja_helpers import flashinfer_module, module_env
from warmup_helpers import target_venv

from fidoctor.diagnosis import diagnose
from fidoctor.snapshot.context import build_context
from fidoctor.snapshot.runner import gather_snapshot

REAL = os.path.realpath("/usr/local/cuda")


def by_id(diag, id_):
    return [f for f in diag.findings if f.id == id_]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("rb")
    flashinfer_module(base, cuda_home="/usr/local/cuda", head_dim=64)
    flashinfer_module(base, cuda_home="/usr/local/cuda", head_dim=128)
    return base


def diag_with(base: Path, cuda_home: str, **extra: str):
    env = module_env(base, cuda_home, XDG_CACHE_HOME=str(base / "xdg"), **extra)
    return diagnose(gather_snapshot(build_context(python=str(target_venv()), env=env)))


def test_changed_cuda_home_string_is_a_pending_full_rebuild(built):
    assert REAL != "/usr/local/cuda", "this box's /usr/local/cuda must be a symlink"
    diag = diag_with(built, REAL)
    [f] = by_id(diag, "cache-rebuild-pending")
    assert f.severity == "warning" and f.data["count"] == 2 and f.data["confirmed"] is True
    assert f.data["recorded_cuda_home"] == ["/usr/local/cuda"]
    assert any("-n -d explain" in e and "4 edge(s)" in e and "command line changed" in e
               for e in f.evidence), f.evidence
    assert any("expected rebuild time" in e for e in f.evidence)
    assert f.fixes[0].id == "pin-cuda-home" and f.data["pin_cuda_home"] == "/usr/local/cuda"


def test_same_string_is_quiet(built):
    diag = diag_with(built, "/usr/local/cuda")
    assert not by_id(diag, "cache-rebuild-pending"), [f.evidence for f in diag.findings]
    rb = diag.snapshot.data("rebuild")
    assert rb["checked"] == 2 and any(e["status"] == "ok" and e["work"] == 0
                                      for e in rb["explained"])


def test_changed_nvcc_threads_is_a_pending_rebuild(built):
    """FLASHINFER_NVCC_THREADS=4 where the cache was built with the default 1."""
    [f] = by_id(diag_with(built, "/usr/local/cuda", FLASHINFER_NVCC_THREADS="4"),
                "cache-rebuild-pending")
    assert "nvcc --threads (1)" in f.title and f.data["confirmed"] is True
    assert any("command line changed" in e for e in f.evidence), f.evidence
    assert f.fixes[0].commands == ["export FLASHINFER_NVCC_THREADS=1"]


def test_setting_cc_adds_ccbin_and_is_a_pending_rebuild(built):
    """CC set now (FlashInfer then passes -ccbin $CC) where the cache was built without it."""
    [f] = by_id(diag_with(built, "/usr/local/cuda", CC="/usr/bin/gcc"), "cache-rebuild-pending")
    assert "-ccbin (None)" in f.title and f.data["confirmed"] is True


def test_touched_source_is_out_of_date_as_is(tmp_path):
    base = tmp_path / "b"
    mod = flashinfer_module(base, cuda_home="/usr/local/cuda")
    src = next(base.glob(".cache/flashinfer/*/*/generated/*/*.cu"))
    st = os.stat(mod / ".ninja_log")
    os.utime(src, (st.st_atime + 60, st.st_mtime + 60))
    [f] = by_id(diag_with(base, "/usr/local/cuda"), "cache-rebuild-pending")
    assert "out of date" in f.title and f.data["confirmed"]


def test_fix_pins_the_recorded_string(built, tmp_path):
    state = tmp_path / "state"
    env = module_env(built, REAL, XDG_STATE_HOME=str(state), XDG_CACHE_HOME=str(built / "xdg"))
    r = run_cli(["fix", "--yes", "--no-warmup", "--only", "cache-rebuild-pending",
                 "--python", str(target_venv())], env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "export CUDA_HOME=/usr/local/cuda" in (state / "fidoctor" / "env.sh").read_text()
