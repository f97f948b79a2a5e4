"""``--pid`` finds the interpreter a live process really runs; ``--pid auto`` finds the server.

Real processes only: Pythons started from a venv's ``bin/python`` symlink (the
cached target venv with CPU torch + flashinfer-python, see warmup_helpers), under
a rewritten argv[0] as setproctitle leaves it, from a relative path, through PATH,
and from a conda-style prefix holding NVIDIA's real cudart wheel.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from cudart_helpers import WHEEL_12_4, cudart_wheel, unpack_wheel
from target_helpers import base_python, conda_prefix, live, plain_venv, set_title, site_packages
from warmup_helpers import target_venv

from fidoctor.errors import FidoctorError
from fidoctor.servers import Candidate, find_serving, pick_serving
from fidoctor.snapshot.context import build_context
from fidoctor.snapshot.interpreter import resolve_argv0, resolve_pid_python

pytestmark = pytest.mark.timeout(240)
IMPORT_TORCH = "import torch\n"


@pytest.fixture(scope="module")
def venv_py() -> Path:
    return target_venv()


def cli(args, env=None, timeout=180):
    return subprocess.run([sys.executable, "-m", "fidoctor", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


def schema():
    from importlib import resources
    return json.loads(resources.files("fidoctor").joinpath("schema/diagnose.schema.json")
                      .read_text())


def test_venv_server_names_the_venv_python_and_its_packages(venv_py, procs, tmp_path):
    """The issue's case: /proc/PID/exe is the base binary; the venv must still be found."""
    p = live(procs, [str(venv_py)], IMPORT_TORCH)
    # The venv's base binary (CI builds the target venv with another Python than the tests').
    assert os.path.realpath(f"/proc/{p.pid}/exe") == os.path.realpath(venv_py)
    env = dict(os.environ, FLASHINFER_WORKSPACE_BASE=str(tmp_path), NO_COLOR="1")
    r = cli(["diagnose", "--json", "--pid", str(p.pid)], env=env)
    assert r.returncode in (0, 1), r.stderr
    doc = json.loads(r.stdout)
    jsonschema.validate(doc, schema())
    t = doc["target"]
    assert t["python"] == str(venv_py)
    assert t["torch"].startswith("2.13.0") and t["flashinfer"] == "0.7.2.post1"
    assert t["source"].startswith(f"--pid {p.pid}: venv, its site-packages mapped")
    assert "target-lacks-flashinfer" not in {f["id"] for f in doc["findings"]}


def test_rewritten_argv0_what_is_mapped_wins(venv_py, procs):
    """setproctitle (vLLM, SGLang) leaves argv[0] naming no file: the maps decide."""
    p = live(procs, [str(venv_py)], IMPORT_TORCH + set_title("sglang::scheduler"))
    res = resolve_pid_python(p.pid, {"PATH": "/usr/bin:/bin"}, os.path.realpath(venv_py))
    assert res.python == str(venv_py) and res.kind == "venv"
    assert any("does not name the running binary" in e for e in res.evidence)


def test_mapped_beats_a_disagreeing_argv0(venv_py, procs, tmp_path):
    """argv[0] is venv A, but the packages in use (mapped) are venv B's: B is the target."""
    a = plain_venv(tmp_path, "a", python=os.path.realpath(venv_py))  # same Python as B
    b_site = next((venv_py.parent.parent / "lib").glob("python*/site-packages"))
    env = dict(os.environ, PYTHONPATH=str(b_site))
    p = live(procs, [str(a / "bin" / "python")], IMPORT_TORCH, env=env)
    res = resolve_pid_python(p.pid, env, os.path.realpath(venv_py))
    assert res.python == str(venv_py.parent / "python")
    assert any("disagrees; what is mapped wins" in e for e in res.evidence)


def test_nothing_mapped_argv0_against_cwd_and_path(procs, tmp_path):
    v = plain_venv(tmp_path)
    p = live(procs, ["bin/python"], cwd=v)  # relative argv[0], resolved against its cwd
    res = resolve_pid_python(p.pid, {"PATH": "/usr/bin:/bin"}, str(base_python()))
    assert (res.python, res.kind, res.how) == (str(v / "bin" / "python"), "venv", "venv, from argv[0]")
    env = dict(os.environ, PATH=f"{v / 'bin'}:/usr/bin:/bin")
    q = live(procs, ["python"], env=env)  # bare name: found on *its* PATH
    res = resolve_pid_python(q.pid, env, str(base_python()))
    assert res.python == str(v / "bin" / "python")


def test_no_venv_at_all_is_the_binary_itself(procs):
    p = live(procs, [str(base_python())])
    ctx = build_context(pid=p.pid)
    assert ctx.python == str(base_python())
    assert ctx.extra["interpreter"]["kind"] == "plain"


def test_conda_style_prefix(procs, tmp_path):
    """A conda env's own python binary, with NVIDIA's real cudart wheel mapped from it."""
    prefix = conda_prefix(tmp_path)
    site = site_packages(prefix)
    unpack_wheel(cudart_wheel(WHEEL_12_4), site)
    lib = site / "nvidia" / "cuda_runtime" / "lib" / "libcudart.so.12"
    p = live(procs, [str(prefix / "bin" / "python")], f"import ctypes; ctypes.CDLL({str(lib)!r})",
             env={"PATH": f"{prefix / 'bin'}:/usr/bin:/bin", "CONDA_PREFIX": str(prefix),
                  "HOME": str(tmp_path)})
    ctx = build_context(pid=p.pid)
    assert ctx.python == str(prefix / "bin" / "python")
    assert ctx.extra["interpreter"]["kind"] == "conda"
    from fidoctor.snapshot.gather.target import query
    info = query(ctx.python, ctx.env)
    assert info["usable"] and info["prefix"] == str(prefix)
    assert info["packages"]["nvidia-cuda-runtime-cu12"]["version"] == WHEEL_12_4


def test_argv0_resolution_rules(tmp_path):
    assert resolve_argv0("bin/python", "/srv/venv", {}) == "/srv/venv/bin/python"
    assert resolve_argv0("/abs/python", "/x", {}) == "/abs/python"
    assert resolve_argv0("no-such-program-here", "/", {"PATH": str(tmp_path)}) is None


# ---- --pid auto -------------------------------------------------------------------------

def test_auto_sees_a_torch_process_and_explains(venv_py, procs):
    p = live(procs, [str(venv_py)], IMPORT_TORCH + set_title("sglang::scheduler"))
    found = {c.pid: c for c in find_serving()}
    assert p.pid in found
    assert found[p.pid].maps_torch and found[p.pid].server_argv
    assert "maps libtorch" in found[p.pid].reasons
    assert os.getpid() not in found  # never ourselves


def test_auto_ranks_trouble_first():
    calm = Candidate(pid=10, name="python", cmdline="python -m sglang.launch_server",
                     server_argv=True, maps_torch=True, maps_flashinfer=True, start=1.0)
    broken = Candidate(pid=11, name="python", cmdline="python serve.py", maps_torch=True,
                       incomplete=2, start=2.0)
    building = Candidate(pid=12, name="python", cmdline="python other.py", build_below=1,
                         start=3.0)
    order = sorted([calm, broken, building], key=lambda c: c.rank(), reverse=True)
    assert [c.pid for c in order] == [12, 11, 10]


def test_cli_pid_auto_says_which_and_why(venv_py, procs, tmp_path):
    live(procs, [str(venv_py)], IMPORT_TORCH + set_title("sglang::scheduler"))
    r = cli(["diagnose", "--json", "--pid", "auto"],
            env=dict(os.environ, FLASHINFER_WORKSPACE_BASE=str(tmp_path)))
    assert r.returncode in (0, 1, 2), r.stderr
    assert "--pid auto chose " in r.stderr
    doc = json.loads(r.stdout)
    jsonschema.validate(doc, schema())
    chosen = int(r.stderr.split("--pid auto chose ")[1].split()[0])
    assert doc["target"]["pid"] == chosen and doc["target"]["pid_auto"]["chosen"] == chosen


@pytest.mark.parametrize("value", ["abc", "0", "-3"])
def test_bad_pid_is_a_one_line_error(value):
    r = cli(["diagnose", "--pid", value])
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "not a process id" in r.stderr


def test_auto_with_no_candidate_is_a_clear_error():
    with pytest.raises(FidoctorError) as e:
        pick_serving([])
    assert "no serving process found" in e.value.message and "--python" in e.value.hint
    one = Candidate(pid=7, name="python", cmdline="python -m vllm.entrypoints.openai.api_server",
                    reasons=["runs a server (vllm.entrypoints)"], server_argv=True)
    choice = pick_serving([one])
    assert choice.chosen is one and choice.others == []
    assert choice.why().startswith("--pid auto chose 7 (python -m vllm.entrypoints")


def test_a_process_in_another_mount_namespace_is_refused_not_misread(procs, tmp_path):
    """A real process in its own mount namespace (``unshare --mount``, as a container has):
    its paths are not ours, so --pid says so (exit 2) and --pid auto never picks it."""
    (tmp_path / "t.c").write_text("int torch_stub(void) { return 0; }\n")
    lib = tmp_path / "libtorch_stub.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(lib), str(tmp_path / "t.c")], check=True)
    p = live(procs, ["unshare", "--mount", "--propagation", "private", sys.executable],
             f"import ctypes; ctypes.CDLL({str(lib)!r})")
    assert os.readlink(f"/proc/{p.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    r = cli(["diagnose", "--pid", str(p.pid)])
    assert r.returncode == 2 and "another mount namespace" in r.stderr
    assert "Traceback" not in r.stderr
    assert p.pid not in {c.pid for c in find_serving()}
    # the same library mapped by a process in our namespace is a candidate
    q = live(procs, [sys.executable], f"import ctypes; ctypes.CDLL({str(lib)!r})")
    assert q.pid in {c.pid for c in find_serving()}


def test_a_pid_that_runs_no_python_is_refused_not_run(procs, tmp_path):
    """``--pid`` of a shell (a wrapper script, or simply the wrong pid): before, its binary
    was queried as the interpreter, ``bash -c <fidoctor's Python script>``, so the script's
    first line ran the ``import`` found on that process's PATH (ImageMagick's, or here a
    real script that leaves a marker). Now: exit 2, one line, nothing of it run; the hint
    names the Python below a wrapper."""
    fake = tmp_path / "fakebin"
    fake.mkdir()
    marker = tmp_path / "IMPORT_RAN"
    (fake / "import").write_text(f"#!/bin/sh\necho \"$*\" >> {marker}\n")
    (fake / "import").chmod(0o755)
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}")
    sh = procs.start(["bash", "-c", "sleep 600; true"], env=env)
    procs.find("sleep")
    for cmd in (["diagnose", "--pid", str(sh.pid)], ["snapshot", "--pid", str(sh.pid), "-o",
                                                      str(tmp_path / "s.json")]):
        r = cli(cmd)
        assert r.returncode == 2, r.stdout + r.stderr
        assert "Traceback" not in r.stderr and "not a Python interpreter" in r.stderr, r.stderr
    assert not marker.exists(), marker.read_text()
    # a wrapper whose child is the Python server: the hint names the child
    w = procs.start(["bash", "-c", f"{sys.executable} -c 'import time; time.sleep(600)'; true"])
    from proc_helpers import _children, wait_for

    wait_for(lambda: _children(w.pid), what="the wrapper's Python child")
    child = _children(w.pid)[0]
    r = cli(["diagnose", "--pid", str(w.pid)])
    assert r.returncode == 2 and f"--pid {child}" in r.stderr, r.stderr
