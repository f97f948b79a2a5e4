"""The ``host_compiler`` gatherer: nvcc's host compiler (``-ccbin $CC``, else gcc) and c++.

Real compilers: this box's gcc 12 under its several names, resolved on a PATH the
test builds. Banners from the H200 machine are parsed as captured
(``tests/fixtures/real-h200/compiler_banners.txt``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from fidoctor.diagnosis import diagnose
from fidoctor.render.style import Styler
from fidoctor.render.text import render
from fidoctor.report.versions import rows
from fidoctor.snapshot.context import build_context
from fidoctor.snapshot.gather import host_compiler as hc
from fidoctor.snapshot.runner import gather_snapshot

H200 = Path(__file__).parent / "fixtures" / "real-h200"
GCC_VERSION = subprocess.run(["gcc", "-dumpfullversion"], capture_output=True, text=True,
                             check=True).stdout.strip()


def _ctx(env):
    return SimpleNamespace(env=env, pid=None)


def _banners():
    out, key = {}, None
    for line in (H200 / "compiler_banners.txt").read_text().splitlines():
        if line.startswith("== "):
            key = line.split()[1]
            out[key] = ""
        else:
            out[key] += line + "\n"
    return out


def test_banners_of_the_h200_and_this_box():
    b = _banners()
    assert hc.parse_version_banner(b["/usr/bin/gcc"]) == ("gcc", "13.3.0")
    assert hc.parse_version_banner(b["/opt/gcc/bin/gcc"]) == ("gcc", "13.3.0")  # "gcc-real" wrapper
    here = subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout
    assert hc.parse_version_banner(here) == ("gcc", GCC_VERSION)


def test_other_families_and_garbage():
    # LLVM's own banner format (no clang on this box to run).
    assert hc.parse_version_banner("Ubuntu clang version 14.0.0-1ubuntu1\nTarget: x86_64\n") == \
        ("clang", "14.0.0")
    assert hc.parse_version_banner("") == (None, None)
    assert hc.parse_version_banner("usage: frobnicate\n")[1] is None


def test_default_is_gcc_and_cxx_on_the_targets_path(tmp_path):
    data = hc.gather(_ctx({"PATH": "/usr/bin:/bin"}), {})
    host, cxx = data["nvcc_host"], data["cxx"]
    assert data["ccbin"] is None
    assert (host["source"], host["command"], host["path"]) == ("PATH", "gcc", "/usr/bin/gcc")
    assert (host["family"], host["version"]) == ("gcc", GCC_VERSION)
    assert host["major"] == int(GCC_VERSION.split(".")[0])
    assert (cxx["source"], cxx["command"], cxx["path"]) == ("PATH", "c++", "/usr/bin/c++")


def test_targets_path_not_ours(tmp_path):
    """The server's PATH puts another gcc first: that one is nvcc's default."""
    b = tmp_path / "bin"
    b.mkdir()
    (b / "gcc").symlink_to(os.path.realpath("/usr/bin/gcc"))
    data = hc.gather(_ctx({"PATH": f"{b}:/usr/bin:/bin"}), {})
    assert data["nvcc_host"]["path"] == str(b / "gcc")
    assert data["nvcc_host"]["realpath"] == os.path.realpath("/usr/bin/gcc")


def test_cc_becomes_ccbin_and_cxx_is_kept_apart(tmp_path):
    cc = os.path.realpath("/usr/bin/gcc")
    data = hc.gather(_ctx({"PATH": "/usr/bin:/bin", "CC": cc, "CXX": "g++"}), {})
    assert data["ccbin"] == cc
    assert (data["nvcc_host"]["source"], data["nvcc_host"]["path"]) == ("CC", cc)
    assert (data["cxx"]["source"], data["cxx"]["path"]) == ("CXX", "/usr/bin/g++")
    assert data["cxx"]["family"] == "gcc"


def test_missing_compilers_are_facts(tmp_path):
    data = hc.gather(_ctx({"PATH": str(tmp_path), "CC": "gcc-99"}), {})
    host, cxx = data["nvcc_host"], data["cxx"]
    assert host["path"] is None and host["run"]["result"] == "not found: gcc-99 on the target's PATH"
    assert cxx["path"] is None and cxx["version"] is None
    data = hc.gather(_ctx({"PATH": "/usr/bin", "CC": str(tmp_path / "nope" / "gcc")}), {})
    assert data["nvcc_host"]["run"]["result"] == f"not found: {tmp_path}/nope/gcc"


def test_a_hung_compiler_times_out(tmp_path, procs):
    """A stand-in compiler that never answers ``--version`` (as one on a dead NFS mount)."""
    cc = tmp_path / "cc-hang"
    cc.write_text("#!/bin/sh\nexec sleep 600\n")
    cc.chmod(0o755)
    facts = hc.describe("nvcc host compiler", "CC", str(cc), {"PATH": "/usr/bin:/bin"},
                        timeout=0.5)
    assert facts["run"]["timed_out"] is True and facts["version"] is None


def test_diagnose_header_and_version_table(tmp_path):
    env = dict(os.environ, CC="/usr/bin/gcc", FLASHINFER_WORKSPACE_BASE=str(tmp_path))
    env.pop("CXX", None)
    snap = gather_snapshot(build_context(python=sys.executable, env=env),
                           only=["target", "host_compiler"], inline=True)
    diag = diagnose(snap)
    t = diag.to_json()["target"]["host_compiler"]
    assert t["nvcc_host"] == {"source": "CC", "command": "/usr/bin/gcc", "path": "/usr/bin/gcc",
                              "family": "gcc", "version": GCC_VERSION}
    text = render(diag, Styler(False))
    assert f"nvcc host /usr/bin/gcc (gcc {GCC_VERSION}, -ccbin $CC)" in text
    table = {r[0]: r for r in rows(snap)}
    assert table["host compiler (nvcc -ccbin)"][1:] == (f"gcc {GCC_VERSION}",
                                                        "/usr/bin/gcc (from $CC)")
