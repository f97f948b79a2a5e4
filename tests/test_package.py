"""The package as users get it: a wheel and an sdist that ``twine check`` passes, the
metadata PyPI shows, one version, the license, the per-finding pages inside the wheel, and
``pipx install`` / ``uv tool install`` from a fresh clone.

Real tools throughout: ``python -m build`` (setuptools fetched by pip's build isolation, from
pip's own download cache after the first run), ``twine check --strict``, pipx and uv
installed once into a cached tools venv (``FIDOCTOR_TEST_CACHE``), real venvs.
"""

from __future__ import annotations

import email
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from warmup_helpers import _locked, cache_root

import fidoctor
from fidoctor.ids import finding_ids

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """sdist + wheel built from the checkout, as a release would be (``python -m build``)."""
    out = tmp_path_factory.mktemp("dist")
    src = tmp_path_factory.mktemp("src") / "fidoctor"
    # A copy without the dev venv and caches: build's sdist step would walk them.
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".venv*", ".git", "build", "*.egg-info", "__pycache__", ".mypy_cache", ".ruff_cache",
        ".pytest_cache"))
    subprocess.run([sys.executable, "-m", "build", "-o", str(out), str(src)], check=True,
                   capture_output=True, text=True, timeout=600)
    wheel = next(out.glob("fidoctor-*.whl"))
    sdist = next(out.glob("fidoctor-*.tar.gz"))
    return wheel, sdist


def test_twine_check_passes(dists):
    r = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *map(str, dists)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("PASSED") == 2


def test_wheel_metadata_license_and_one_version(dists):
    wheel, sdist = dists
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = email.message_from_string(
            z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode())
        lic = z.read(next(n for n in names if n.endswith(".dist-info/licenses/LICENSE")))
    assert meta["Version"] == fidoctor.__version__
    assert wheel.name.startswith(f"fidoctor-{fidoctor.__version__}-")
    assert meta["License-Expression"] == "Apache-2.0"
    assert b"Apache License" in lic and b"Version 2.0" in lic
    assert meta["Author"] and meta["Keywords"]
    classifiers = meta.get_all("Classifier")
    # The Python versions CI runs (.ci/run) are the ones claimed.
    ci = (ROOT / ".ci" / "run").read_text()
    tested = sorted(set(re.findall(r"PYTHONS=\(([^)]*)\)", ci)[0].split()))
    assert tested and all(f"Programming Language :: Python :: {v}" in classifiers
                          for v in tested)
    assert meta["Requires-Python"] == f">={min(tested, key=lambda v: tuple(map(int, v.split('.'))))}"
    assert meta["Description-Content-Type"] == "text/markdown"
    with tarfile.open(sdist) as t:
        members = t.getnames()
    top = members[0].split("/")[0]
    for f in ("LICENSE", "CHANGELOG.md", "README.md", "pyproject.toml"):
        assert f"{top}/{f}" in members


def test_wheel_ships_a_page_for_every_id(dists):
    with zipfile.ZipFile(dists[0]) as z:
        pages = {Path(n).stem for n in z.namelist() if n.startswith("fidoctor/findings_docs/")
                 and n.endswith(".md")}
        assert "fidoctor/schema/diagnose.schema.json" in z.namelist()
        assert "fidoctor/py.typed" in z.namelist()
    assert finding_ids() <= pages


def test_readme_renders_on_pypi_without_relative_links():
    """PyPI shows README as the long description: a repo-relative link there is a 404."""
    tokens = MarkdownIt("commonmark").enable("table").parse((ROOT / "README.md").read_text())
    links = []
    for tok in tokens:
        for child in tok.children or []:
            if child.type in ("link_open", "image"):
                links.append(child.attrGet("href") or child.attrGet("src"))
    assert all(re.match(r"https?://", h or "") for h in links), links


def _tools() -> Path:
    """pipx and uv in one cached venv (built once; a lock guards concurrent sessions)."""
    venv = cache_root() / "pkg-tools"
    done = venv / ".done"
    with _locked(cache_root() / "pkg-tools.lock"):
        if not done.exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                            "pipx", "uv"], check=True, timeout=600)
            done.write_text("pipx uv\n")
    return venv / "bin"


def _fresh_clone(tmp_path: Path) -> Path:
    """A clone of the committed tree (what a user gets), else a copy of the checkout."""
    dst = tmp_path / "clone"
    if (ROOT / ".git").exists() and shutil.which("git"):
        subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(dst)], check=True)
    else:
        shutil.copytree(ROOT, dst, symlinks=True,
                        ignore=shutil.ignore_patterns(".venv*", "__pycache__"))
    return dst


@pytest.mark.parametrize("tool", ["pipx", "uv"])
def test_tool_install_from_a_fresh_clone(tool, tmp_path):
    """``pipx install .`` / ``uv tool install .``: fidoctor in its own venv, its pages inside."""
    bins = _tools()
    clone = _fresh_clone(tmp_path)
    env = dict(os.environ, HOME=str(tmp_path / "home"), PIPX_HOME=str(tmp_path / "pipx"),
               PIPX_BIN_DIR=str(tmp_path / "bin"), UV_TOOL_DIR=str(tmp_path / "uvtools"),
               UV_TOOL_BIN_DIR=str(tmp_path / "bin"),
               UV_CACHE_DIR=str(cache_root() / "uv-cache"),
               PIPX_DEFAULT_PYTHON=sys.executable, UV_PYTHON=sys.executable,
               UV_PYTHON_DOWNLOADS="never")
    env.pop("VIRTUAL_ENV", None)
    cmd = ([str(bins / "pipx"), "install", "."] if tool == "pipx"
           else [str(bins / "uv"), "tool", "install", "."])
    r = subprocess.run(cmd, cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    exe = tmp_path / "bin" / "fidoctor"
    assert exe.exists()
    r = subprocess.run([str(exe), "--version"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert fidoctor.__version__ in r.stdout
    # The pages come from the installed package, not from the clone.
    shutil.rmtree(clone)
    r = subprocess.run([str(exe), "explain", "cache-incomplete-module"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("# cache-incomplete-module")


def test_readme_venv_install_line_works_on_a_fresh_home(tmp_path):
    """README's third install form, run verbatim by a real shell in a fresh clone with an empty
    HOME (a new machine): fidoctor ends up in ~/.local/bin. Before: ``ln -s … ~/.local/bin/``
    failed ("No such file or directory") where ~/.local/bin did not exist yet."""
    text = (ROOT / "README.md").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("python3 -m venv ~/.local/fidoctor"))
    clone = _fresh_clone(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    bindir = tmp_path / "pybin"
    bindir.mkdir()
    (bindir / "python3").symlink_to(sys.executable)
    env = dict(os.environ, HOME=str(home), PATH=f"{bindir}:/usr/bin:/bin")
    env.pop("VIRTUAL_ENV", None)
    r = subprocess.run(["sh", "-c", line], cwd=clone, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    exe = home / ".local" / "bin" / "fidoctor"
    r = subprocess.run([str(exe), "--version"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert fidoctor.__version__ in r.stdout
