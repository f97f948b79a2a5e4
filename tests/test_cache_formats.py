"""ninja's state files as fidoctor reads and writes them, checked against the real ninja.

Two real ninjas are on this box: Debian's /usr/bin/ninja 1.11.1 (log v5,
MurmurHash64A) and the pip ninja 1.13.x in the target venv (log v7,
rapidhash). Each runs real builds (gcc with ``deps = gcc``); the hashes it
logs must equal ``hash_command`` of the commands its ``-t compdb`` prints,
the deps fidoctor reads must equal ``ninja -t deps``, and a log + deps file
fidoctor writes must leave the real ninja with nothing to do.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Dict, List

import pytest
from warmup_helpers import target_venv

from fidoctor.cachebundle import ninjafiles as nf
from fidoctor.cachebundle.paths import PathMap
from fidoctor.cachebundle.target import Target, arch_dir


def ninjas() -> List[str]:
    out = []
    if os.path.exists("/usr/bin/ninja"):
        out.append("/usr/bin/ninja")
    venv_ninja = target_venv().parent / "ninja"
    if venv_ninja.exists():
        out.append(str(venv_ninja))
    return out


def version_of(ninja: str):
    return nf.parse_ninja_version(subprocess.run([ninja, "--version"], capture_output=True,
                                                 text=True).stdout)


def c_project(d: Path, n: int = 3) -> None:
    """n C files sharing a header, built into a .so by real gcc under ninja."""
    (d / "inc").mkdir(parents=True)
    (d / "inc" / "common.h").write_text("#define ANSWER 42\n")
    edges = []
    for i in range(n):
        (d / f"f{i}.c").write_text(f'#include "common.h"\nint f{i}(void) {{ return ANSWER + {i}; }}\n')
        edges.append(f"build {d}/f{i}.o: cc {d}/f{i}.c\n")
    objs = " ".join(f"{d}/f{i}.o" for i in range(n))
    pad = "x" * 57  # commands of several lengths: every rapidhash branch
    (d / "build.ninja").write_text(
        f"cflags = -fPIC -O1 -I{d}/inc\n"
        "rule cc\n  command = gcc -MMD -MF $out.d $cflags -c $in -o $out\n"
        "  depfile = $out.d\n  deps = gcc\n"
        f"rule link\n  command = gcc -shared $in -o $out # {pad}\n"
        "rule touch\n  command = touch $out # $extra\n"
        + "".join(edges) + f"build {d}/lib.so: link {objs}\n"
        + "".join(f"build {d}/t{k}: touch {d}/f0.c\n  extra = {'y' * k}\n"
                  for k in (0, 1, 3, 4, 9, 16, 17, 40, 49, 95, 96, 150)))


@pytest.mark.parametrize("ninja", ninjas())
def test_command_hashes_and_deps_match_the_real_ninja(ninja, tmp_path):
    c_project(tmp_path)
    r = subprocess.run([ninja, "-C", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    version, log = nf.read_log((tmp_path / ".ninja_log").read_bytes())
    assert version == nf.log_version_for(version_of(ninja))
    cdb = json.loads(subprocess.run([ninja, "-C", str(tmp_path), "-t", "compdb"],
                                    capture_output=True, text=True).stdout)
    assert len(cdb) >= 16
    for e in cdb:
        assert log[e["output"]]["hash"] == nf.hash_command(e["command"], version), e["output"]
    raw = (tmp_path / ".ninja_deps").read_bytes()
    deps = nf.read_deps(raw)
    tool = subprocess.run([ninja, "-C", str(tmp_path), "-t", "deps"], capture_output=True,
                          text=True).stdout
    for out, (_mt, paths) in deps.items():
        block = tool.split(f"{out}: #deps")[1].split("\n\n")[0]
        assert [ln.strip() for ln in block.splitlines()[1:] if ln.strip()] == paths
        assert f"{tmp_path}/inc/common.h" in paths
    assert nf.write_deps([(o, mt, p) for o, (mt, p) in deps.items()]) == raw


@pytest.mark.parametrize("ninja", ninjas())
def test_written_log_and_deps_make_a_moved_build_up_to_date(ninja, tmp_path):
    """Build in a/, move the tree to b/ (every path changes), rewrite the state files the
    way import does: the real ninja has nothing to do. A changed header still rebuilds."""
    a, b = tmp_path / "a", tmp_path / "b"
    c_project(a)
    assert subprocess.run([ninja, "-C", str(a)], capture_output=True).returncode == 0
    _v, log = nf.read_log((a / ".ninja_log").read_bytes())
    deps = nf.read_deps((a / ".ninja_deps").read_bytes())
    shutil.copytree(a, b)
    (b / "build.ninja").write_text((b / "build.ninja").read_text().replace(str(a), str(b)))
    for f in (".ninja_log", ".ninja_deps"):
        (b / f).unlink()
    r = subprocess.run([ninja, "-C", str(b), "-n"], capture_output=True, text=True)
    assert "no work to do" not in r.stdout  # the quiet case: without the rewrite it rebuilds
    version = nf.log_version_for(version_of(ninja))
    cdb = json.loads(subprocess.run([ninja, "-C", str(b), "-t", "compdb"], capture_output=True,
                                    text=True).stdout)
    stamp = time.time_ns()
    entries = [(0, 1, stamp, e["output"], nf.hash_command(e["command"], version)) for e in cdb]
    (b / ".ninja_log").write_bytes(nf.write_log(version, entries))
    (b / ".ninja_deps").write_bytes(nf.write_deps(
        [(o.replace(str(a), str(b)), stamp, [p.replace(str(a), str(b)) for p in ps])
         for o, (_mt, ps) in deps.items()]))
    for e in cdb:
        if os.path.exists(e["output"]):
            os.utime(e["output"], ns=(stamp, stamp))
    r = subprocess.run([ninja, "-C", str(b), "-n", "-d", "explain"], capture_output=True,
                       text=True)
    assert "no work to do" in r.stdout, r.stdout + r.stderr
    assert log  # (the source log had entries for every output)
    os.utime(b / "inc" / "common.h", ns=(stamp + 10**9, stamp + 10**9))
    r = subprocess.run([ninja, "-C", str(b), "-n"], capture_output=True, text=True)
    assert "no work to do" not in r.stdout


def test_arch_dir_follows_flashinfer_07():
    assert arch_dir("9.0a") == "90a"
    assert arch_dir("9.0") == "90a"
    assert arch_dir("8.0 9.0a") == "80_90a"
    assert arch_dir("10.0 8.9") == "89_100a"
    assert arch_dir("12.0f") == "120f"


def test_path_map_matches_whole_path_components_only():
    t = Target(python="", flashinfer_version="0.7.2.post1", flashinfer_dir="/t/site/flashinfer",
               tvm_ffi_dir="/t/site/tvm_ffi", site_dir="/t/site", root="/t/base", arch="90a",
               cuda_home="/t/cuda", cuda_home_real="/usr/local/cuda-13.0",
               toolkit_version="13.0.88", cuda_runtime=None, torch_version=None,
               torch_cuda=None, python_version=None, ninja=None, ninja_version=None)
    src: Dict[str, str] = {"workspace": "/s/ws", "flashinfer_dir": "/s/site/flashinfer",
                           "tvm_ffi_dir": "/s/site/tvm_ffi", "site_dir": "/s/site",
                           "cuda_home": "/usr/local/cuda", "cuda_home_real": "/usr/local/cuda-13.0"}
    pm = PathMap(src, t, "/t/ws")
    text = ("cuda_home = /usr/local/cuda\n -I/s/site/flashinfer/data/x $\n"
            " -isystem /usr/local/cuda-13.0/include -L/usr/local/cuda/lib64 /opt/s/ws/x\n"
            "build /s/ws/cached_ops/m/m.so: link /s/ws/cached_ops/m/a.o\n")
    assert pm.sub_text(text) == (
        "cuda_home = /t/cuda\n -I/t/site/flashinfer/data/x $\n"
        " -isystem /usr/local/cuda-13.0/include -L/t/cuda/lib64 /opt/s/ws/x\n"
        "build /t/ws/cached_ops/m/m.so: link /t/ws/cached_ops/m/a.o\n")
    assert pm.map("/usr/local/cuda-13.0/include/a.h") == "/usr/local/cuda-13.0/include/a.h"
    assert pm.map("/s/site/other/x.h") == "/t/site/other/x.h"
    assert pm.shipped("/s/ws/generated/m/k.cu") == "generated/m/k.cu"
    assert pm.shipped("/s/site/x") is None
