"""fidoctor.flashinfer.ninja against real FlashInfer build.ninja files and the real ninja.

The module dirs are written by FlashInfer 0.7.2.post1 itself and built by the
target venv's ninja (compiles replaced by a launcher: see ninja_helpers).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from ninja_helpers import flashinfer_module, venv_ninja

from fidoctor.flashinfer import ninja


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return flashinfer_module(tmp_path_factory.mktemp("fi"), cuda_home="/usr/local/cuda")


def test_parse_reads_flashinfer_variables_flags_and_edges(built):
    nf = ninja.read(str(built / "build.ninja"))
    assert nf is not None
    assert nf["cuda_home"] == "/usr/local/cuda"
    assert nf["variables"]["name"] == built.name
    assert {"arch": "compute_90a", "code": "sm_90a"} in nf["gencode"]
    assert "-isystem" in nf["flags"]["cuda_cflags"]
    assert "/usr/local/cuda/include" in nf["flags"]["cuda_cflags"]  # $cuda_home expanded
    assert "-O3" in nf["flags"]["cuda_cflags"] and "-lcuda" in nf["flags"]["ldflags"]
    assert nf["rules"] == {"cuda_compile": 3, "link": 1}
    assert all(o.startswith(str(built)) for e in nf["edges"] for o in e["outputs"])


def test_torch_style_file_gives_cuda_home_from_nvcc():
    nf = ninja.parse("ninja_required_version = 1.3\ncxx = c++\nnvcc = /opt/cuda-12.4/bin/nvcc\n"
                     "cuda_cflags = -gencode=arch=compute_90,code=sm_90 -O2\n")
    assert nf["cuda_home"] == "/opt/cuda-12.4"
    assert nf["gencode"] == [{"arch": "compute_90", "code": "sm_90"}]


def test_up_to_date_module_needs_no_work(built, tmp_path):
    cache = ninja.ExplainCache(str(tmp_path / "c.json"))
    r = ninja.explain(str(built), ninja=venv_ninja(), cache=cache)
    assert r["status"] == "ok" and r["work"] == 0, r


def test_changed_cuda_home_string_rebuilds_every_object(built, tmp_path):
    """The real mode 6: the same toolkit named by another string (the symlink's target)."""
    log = built / ".ninja_log"
    before = (log.stat().st_mtime_ns, log.read_bytes())
    text = ninja.with_variable((built / "build.ninja").read_text(), "cuda_home",
                               os.path.realpath("/usr/local/cuda"))
    cache = ninja.ExplainCache(str(tmp_path / "c.json"))
    r = ninja.explain(str(built), ninja=venv_ninja(), text=text, cache=cache)
    assert r["status"] == "ok", r
    # every object (3) recompiles, then the link: ninja names the first reason per edge
    assert r["work"] == 4 and r["reasons"].get("command-changed") == 3, r
    assert any("command line changed for" in line for line in r["first"])
    assert (log.stat().st_mtime_ns, log.read_bytes()) == before  # dry run: log untouched
    cache.save()
    again = ninja.explain(str(built), ninja=venv_ninja(), text=text,
                          cache=ninja.ExplainCache(str(tmp_path / "c.json")))
    assert again["cached"] is True and again["work"] == 4


def test_cache_misses_once_the_ninja_log_changes(built, tmp_path):
    cache = ninja.ExplainCache(str(tmp_path / "c.json"))
    ninja.explain(str(built), ninja=venv_ninja(), cache=cache)
    assert ninja.explain(str(built), ninja=venv_ninja(), cache=cache)["cached"] is True
    log = built / ".ninja_log"
    st = log.stat()
    os.utime(log, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert ninja.explain(str(built), ninja=venv_ninja(), cache=cache)["cached"] is False


def test_missing_objects_are_named(tmp_path):
    mod = flashinfer_module(tmp_path, build=False)
    r = ninja.explain(str(mod), ninja=venv_ninja(),
                      cache=ninja.ExplainCache(str(tmp_path / "c.json")))
    assert r["status"] == "ok" and r["work"] == 4
    # ninja 1.13 first misses the deps of a never-built object
    assert r["reasons"].get("deps-missing", 0) + r["reasons"].get("missing-output", 0) == 3, r


def test_a_ninja_that_hangs_is_cut_at_the_budget(built, tmp_path, procs):
    """A stand-in ninja that never answers (a build dir on a dead mount would do this)."""
    hung = tmp_path / "ninja"
    hung.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(600)\n")
    hung.chmod(0o755)
    rs = ninja.explain_many([str(built), str(built) + "-other"], budget_s=0.5, ninja=str(hung),
                            per_call_s=0.5, cache=ninja.ExplainCache(str(tmp_path / "c.json")))
    assert rs[0]["status"] == "timeout"
    assert rs[1]["status"] == "skipped"


def test_no_ninja_is_a_result_not_an_exception(built, tmp_path):
    r = ninja.explain(str(built), ninja=str(tmp_path / "absent-ninja"))
    assert r["status"] == "no-ninja"
