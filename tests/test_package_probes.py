"""flashinfer-package-mismatch and cache-stale-version against the real FlashInfer 0.7.2.post1.

The target is the cached venv with the real flashinfer-python wheel installed
by pip (its RECORD dates the install). flashinfer-cubin (458 MB on PyPI) and
flashinfer-jit-cache (not on PyPI) are stand-ins: a dist-info written as pip
writes it (METADATA, INSTALLER, RECORD) plus the two-line module FlashInfer
imports, on the target's PYTHONPATH. FlashInfer's own import is run once to
show it reacts to that stand-in exactly as the finding says.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import DECODE, Box
from warmup_helpers import build_env, target_venv

from fidoctor.diagnosis import diagnose
from fidoctor.snapshot.context import build_context
from fidoctor.snapshot.runner import gather_snapshot

FI = "0.7.2.post1"


def dist(site: Path, name: str, version: str) -> None:
    """A package as pip installs it: dist-info (METADATA, INSTALLER, RECORD) and its module."""
    mod = name.replace("-", "_")
    (site / mod).mkdir(parents=True, exist_ok=True)
    (site / mod / "__init__.py").write_text(
        f"__version__ = {version!r}\nimport os\n"
        "def get_cubin_dir():\n    return os.path.join(os.path.dirname(__file__), 'cubins')\n")
    di = site / f"{mod}-{version}.dist-info"
    di.mkdir(exist_ok=True)
    (di / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (di / "INSTALLER").write_text("pip\n")
    (di / "RECORD").write_text(f"{mod}/__init__.py,,\n{di.name}/METADATA,,\n{di.name}/RECORD,,\n")


def env_for(box: Box, site: Path = None, **extra: str):
    env = build_env(target_venv().parent.parent, box.base, extra=extra)
    if site is not None:
        env["PYTHONPATH"] = str(site)
    return env


def diag(env):
    return diagnose(gather_snapshot(build_context(python=str(target_venv()), env=env)))


def by_id(d, id_):
    return [f for f in d.findings if f.id == id_]


def test_old_cubin_is_ignored_by_0_7_2_and_the_finding_quotes_its_check(box, tmp_path):
    site = tmp_path / "site"
    dist(site, "flashinfer-cubin", "0.6.13")
    env = env_for(box, site)
    [f] = by_id(diag(env), "flashinfer-package-mismatch")
    assert f.severity == "warning" and f.data["ignored_by_flashinfer"] is True
    assert "Ignoring incompatible flashinfer-cubin" in f.title
    assert any(e.startswith("FlashInfer's own check: flashinfer/jit/env.py:") and
               "package_version != flashinfer_version" in e for e in f.evidence), f.evidence
    # FlashInfer itself, imported in the target, says the same
    r = subprocess.run([str(target_venv()), "-c", "import flashinfer.jit.env"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert "Ignoring incompatible flashinfer-cubin package" in r.stderr, r.stderr[-2000:]


def test_disabled_check_with_a_real_mismatch_is_an_error(box, tmp_path):
    site = tmp_path / "site"
    dist(site, "flashinfer-cubin", "0.6.13")
    [f] = by_id(diag(env_for(box, site, FLASHINFER_DISABLE_VERSION_CHECK="1")),
                "flashinfer-package-mismatch")
    assert f.severity == "error" and f.data["check_disabled"]
    assert f.fixes[0].commands == ["unset FLASHINFER_DISABLE_VERSION_CHECK"]


def test_jit_cache_of_another_version_fires_and_a_cuda_suffix_is_quiet(box, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    dist(a, "flashinfer-jit-cache", "0.7.1+cu129")
    dist(b, "flashinfer-jit-cache", f"{FI}+cu129")
    [f] = by_id(diag(env_for(box, a)), "flashinfer-package-mismatch")
    assert f.data["package"] == "flashinfer-jit-cache" and f.severity == "warning"
    assert not by_id(diag(env_for(box, b)), "flashinfer-package-mismatch")


def test_matching_cubin_is_quiet(box, tmp_path):
    site = tmp_path / "site"
    dist(site, "flashinfer-cubin", FI)
    assert not by_id(diag(env_for(box, site)), "flashinfer-package-mismatch")


def _record_mtime() -> float:
    site = subprocess.run([str(target_venv()), "-c", "import flashinfer,os;print(os.path.dirname("
                           "os.path.dirname(flashinfer.__file__)))"], capture_output=True,
                          text=True, timeout=120, env=build_env(target_venv().parent.parent,
                                                                Path("/nonexistent"))).stdout
    rec = next(Path(site.strip()).glob(f"flashinfer_python-{FI}.dist-info/RECORD"))
    return rec.stat().st_mtime


def test_modules_built_before_the_install_are_stale(box):
    installed = _record_mtime()
    ws = box.workspace(version=FI)
    d = box.module(ws, DECODE)
    for p in d.iterdir():
        os.utime(p, (installed - 3600, installed - 3600))
    [f] = by_id(diag(env_for(box)), "cache-stale-version")
    assert f.severity == "warning" and f.data["modules"] == [DECODE]
    assert any("RECORD mtime" in e for e in f.evidence)


def test_objects_straddling_the_install_are_a_mix(box):
    installed = _record_mtime()
    ws = box.workspace(version=FI)
    d = box.module(ws, DECODE, objects=3)
    objs = sorted(d.glob("*.cuda.o"))
    os.utime(objs[0], (installed - 3600, installed - 3600))
    [f] = by_id(diag(env_for(box)), "cache-stale-version")
    assert f.data["mixed"] == [DECODE] and "mix objects" in f.title


def test_fresh_cache_is_quiet_and_old_layouts_are_info_only(box):
    box.module(box.workspace(version=FI), DECODE)
    box.module(box.workspace(version=None, arch="90"), DECODE)  # FlashInfer < 0.4.1 layout
    d = diag(env_for(box))
    found = by_id(d, "cache-stale-version")
    assert [f.severity for f in found] == ["info"]
    assert "unversioned" in found[0].evidence[0]


@pytest.fixture(autouse=True)
def _fi_target():
    target_venv()


def test_pip_commands_name_a_target_under_a_path_with_a_space_whole(box, tmp_path):
    """The real 0.7.2 venv reached through ``/…/my envs/venv`` (a symlink to it, so its
    ``sys.executable`` has the space) and a stand-in flashinfer-cubin 0.6.13: the printed
    ``… -m pip install`` / ``uninstall`` commands run as printed must start that Python (they
    ran ``/…/my`` with ``envs/venv/bin/python`` as its first argument)."""
    import shlex

    from fidoctor.snapshot.context import build_context as ctx_of

    (tmp_path / "my envs").mkdir()
    link = tmp_path / "my envs" / "venv"
    link.symlink_to(target_venv().parent.parent)
    py = link / "bin" / "python"
    site = tmp_path / "site"
    dist(site, "flashinfer-cubin", "0.6.13")
    d = diagnose(gather_snapshot(ctx_of(python=str(py), env=env_for(box, site))))
    [f] = by_id(d, "flashinfer-package-mismatch")
    pips = [shlex.split(c) for x in f.fixes for c in x.commands if " pip " in c]
    assert pips and all(a[:3] == [str(py), "-m", "pip"] for a in pips), pips
