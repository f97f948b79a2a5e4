"""fidoctor warmup and diagnose on every FlashInfer family, through its real API (issue 18).

Real releases from PyPI, each in its own venv (release_helpers: one CPU torch shared through a
.pth): 0.2.5, 0.2.6.post1, 0.2.14.post1, 0.3.1.post1, 0.4.1, 0.5.3, 0.6.18.post1, 0.7.4.

Where the tests stop short, and why: on this CPU box the builds of 0.2.x–0.3.x cannot finish.
Their modules include ``c10/cuda`` headers (``c10/cuda/impl/cuda_cmake_macros.h``) and link
``-lc10_cuda -ltorch_cuda``, which only CUDA torch wheels ship; 0.2.0–0.2.5 build through
``torch.utils.cpp_extension``, whose CUDA_HOME is None under a CPU torch. So for those
families what is checked is that warmup reaches each family's real build call (the generator
in 0.2.5, ``JitSpec.build(verbose)`` in 0.2.6, ``build(verbose, need_lock)`` in 0.2.14 and
0.3.1) with the right lock and module dir, and reports the real reason it stopped — never the
TypeError / ``FileLock(None)`` these releases used to raise — and that a kill in the middle of
their real nvcc compile (the kernel's own ``.cu`` compiles for tens of seconds before the
binding file fails) is named. No module of theirs is ever cached here. From 0.4 modules link
against tvm-ffi, not torch's CUDA libraries: 0.5.3, 0.6.18.post1 and 0.7.4 really build and
cache a module; 0.4.1 only builds against the tvm-ffi it pins (0.1.0b15, gone from PyPI) and
fails against 0.1.0 (test_041_…), so it shows its real error instead.
"""

from __future__ import annotations

import json
import os
import time

import pytest
from conftest import run_cli
from release_helpers import RELEASES, release_python, torch_extensions_dir
from warmup_helpers import build_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
UNVERSIONED = ("0.2.", "0.3.")  # <base>/.cache/flashinfer/<arch>; from 0.4.1 <version>/<arch>
INSTALL_JOBS = 3  # releases installed at once on a cold cache (bench/bench_releases.py)
USES = {"test_025_": "0.2.5", "test_a_flashinfer_without_jit": "0.2.5", "test_041_": "0.4.1"}


@pytest.fixture(scope="module", autouse=True)
def _install_releases_in_the_background(request):
    """On a cold cache (CI), install every release the selected tests use, INSTALL_JOBS at a
    time, while the first tests run: most of an install is waiting (PyPI, pip, disk), not CPU.
    A process of its own (no threads in the test process, which forks gatherers). Only a head
    start: each test still calls release_python, which waits on that release's lock (or
    installs it itself, with the real error, if the background install failed)."""
    import subprocess
    import sys

    import release_helpers

    ids = [it.nodeid for it in request.session.items if it.module is request.module]
    wanted = {v for v in RELEASES for i in ids if f"[{v}" in i or f"-{v}]" in i}
    wanted |= {v for k, v in USES.items() for i in ids if f"::{k}" in i}
    if not wanted or all(release_helpers.installed(v) for v in wanted):
        yield
        return
    p = subprocess.Popen([sys.executable, release_helpers.__file__, "--jobs", str(INSTALL_JOBS),
                          *sorted(wanted, key=RELEASES.index)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield
    finally:
        try:
            p.wait(timeout=900)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)
            p.wait()


def workspace(base, version):
    """Where ``version`` puts its workspace for the tests' arch (read in each release's
    jit/env.py): 0.2.x-0.3.x name the dir from torch's arch flags (TORCH_CUDA_ARCH_LIST 9.0 ->
    ``90``; 0.3.1 too, although it compiles for FLASHINFER_CUDA_ARCH_LIST), 0.4.1+ from
    FLASHINFER_CUDA_ARCH_LIST under a dir named for the version."""
    root = base / ".cache" / "flashinfer"
    return root / "90" if version.startswith(UNVERSIONED) else root / version / "90a"


def release_env(py, base, version):
    """build_env, plus: 0.4.x's ``import flashinfer`` compiles tvm-ffi's c_dlpack torch
    extension (70–90 s of g++ on this 2-core box) under TORCH_EXTENSIONS_DIR; the tests share the one
    compiled at install (release_helpers.torch_extensions_dir) instead of compiling it again
    in every test's fresh HOME."""
    env = build_env(py.parent.parent, base)
    ext = torch_extensions_dir(version)
    if ext is not None:
        env["TORCH_EXTENSIONS_DIR"] = str(ext)
    return env


def _warmup(py, base, *extra, version=""):
    env = release_env(py, base, version)
    env.pop("TORCH_CUDA_ARCH_LIST", None)
    r = run_cli(["warmup", "--python", str(py), "--arch", "9.0", "--modules",
                 "single-decode:f16:64", "--sequential", "--json", *extra], env=env, timeout=300)
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    return r, json.loads(r.stdout)


def test_025_generator_build_is_supervised_and_names_the_cpu_torch(tmp_path):
    """Family 0.2.0–0.2.5: the generator call is the build (load_cuda_ops); warmup runs it in
    its child with the module's real name, dir and lock (cached_ops/<name>.lock)."""
    py = release_python("0.2.5")
    r, doc = _warmup(py, tmp_path)
    assert r.returncode == 1, r.stderr
    assert doc["target"]["version"] == "0.2.5" and doc["target"]["family"] == "load_cuda_ops"
    [m] = doc["modules"]
    assert m["status"] == "failed"
    assert m["name"].startswith("single_decode_with_kv_cache_dtype_q_f16")
    assert m["module_dir"] == str(tmp_path / ".cache" / "flashinfer" / "90" / "cached_ops"
                                  / m["name"])
    # The cause first (torch's own misleading "CUDA_HOME … is not set" only quoted after it).
    assert m["error"].startswith("torch.utils.cpp_extension found no CUDA toolkit")
    assert "CPU build" in m["error"]


@pytest.mark.parametrize("version", ["0.2.6.post1", "0.2.14.post1", "0.3.1.post1"])
def test_jitspec_families_reach_their_real_ninja_build(tmp_path, version):
    """0.2.6 has build(verbose) and no lock_path; 0.2.14 and 0.3.1 have build(verbose,
    need_lock). They used to fail before any build (TypeError / FileLock(None)); now
    FlashInfer's own ninja runs in the release's own workspace and the real compiler error
    (CUDA torch headers missing from a CPU torch) is quoted. Stops short: no CUDA torch here,
    so no module of these releases can be cached (see the module doc)."""
    py = release_python(version)
    r, doc = _warmup(py, tmp_path)
    assert doc["target"]["family"] == "spec" and doc["target"]["version"] == version
    [m] = doc["modules"]
    assert m["status"] == "failed", m
    assert "TypeError" not in m["error"] and "NoneType" not in m["error"], m["error"]
    assert "cuda_cmake_macros.h" in m["error"] or "c10/cuda" in m["error"], m["error"]
    mdir = m["module_dir"]
    assert mdir == str(workspace(tmp_path, version) / "cached_ops" / m["name"])
    assert os.path.exists(os.path.join(mdir, "build.ninja")), "FlashInfer's own build ran"
    lock = os.path.join(os.path.dirname(mdir), "tmp", m["name"] + ".lock")
    assert os.path.exists(lock), "the build took the family's lock (cached_ops/tmp/<name>.lock)"


def test_a_flashinfer_without_jit_is_a_clear_unsupported_result(tmp_path):
    """Stand-in (no real release lacks every family's API and is installable with this CPU
    torch): a package named flashinfer with a version and no flashinfer.jit, as the 0.1.x
    prebuilt-only releases were. The result is warmup-unsupported-version, exit 2, JSON that
    validates against the warmup schema, no traceback."""
    from importlib import resources

    import jsonschema

    py = release_python("0.2.5")
    pkg = tmp_path / "site" / "flashinfer"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("__version__ = '0.1.6'\n")
    env = build_env(py.parent.parent, tmp_path)
    env["PYTHONPATH"] = str(tmp_path / "site")
    r = run_cli(["warmup", "--python", str(py), "--arch", "9.0", "--json"], env=env,
                timeout=300)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    doc = json.loads(r.stdout)
    [f] = doc["findings"]
    assert f["id"] == "warmup-unsupported-version" and "0.1.6" in f["title"]
    assert f["fixes"] and doc["modules"] == []
    schema = json.loads(resources.files("fidoctor").joinpath("schema/warmup.schema.json")
                        .read_text())
    jsonschema.validate(doc, schema)


@pytest.mark.parametrize("version,lock", [
    ("0.2.5", "{name}.lock"),
    ("0.2.14.post1", "tmp/{name}.lock"),
    ("0.3.1.post1", "tmp/{name}.lock"),
    ("0.5.3", "tmp/{name}.lock"),
    ("0.6.18.post1", "tmp/{name}.lock"),
    ("0.7.4", "tmp/{name}.lock")])
def test_a_real_two_process_lock_wait_is_stalled_and_names_the_holder(tmp_path, version, lock):
    """Another process holds the family's real module lock (a real flock, as a second server
    building the same module would); FlashInfer's own build call in warmup's child blocks on
    it, and warmup stops it after --stall-after naming the holder, which it leaves alone. The
    lock is where the release's own ``lock_path`` / load_cuda_ops puts it, in the workspace
    --plan names (``90``, ``0.5.3/90``: 0.4-0.6.x take "9.0" literally, ``<version>/90a``:
    0.6.18 and 0.7 add the ``a``)."""
    from warmup_helpers import alive, hold_flock, kill_and_wait

    py = release_python(version)
    _, doc = _warmup(py, tmp_path / "probe", "--plan", version=version)
    name = doc["modules"][0]["name"]
    ops = tmp_path / os.path.relpath(os.path.dirname(doc["modules"][0]["module_dir"]),
                                     tmp_path / "probe")
    literal = version.startswith(("0.4.", "0.5."))  # "9.0" -> 90: no "a" added
    ws = (tmp_path / ".cache" / "flashinfer" / version / "90" if literal
          else workspace(tmp_path, version)) / "cached_ops"
    assert ops == ws, (ops, ws)
    holder = hold_flock(ws / lock.format(name=name))
    try:
        r, doc = _warmup(py, tmp_path, "--stall-after", "5", version=version)
        assert alive([holder.pid]) == [holder.pid], "warmup must not kill the lock's holder"
    finally:
        kill_and_wait(holder)
    [m] = doc["modules"]
    assert m["status"] == "stalled", m
    assert m["verdict"]["data"]["cause"] == "lock-held"
    assert m["verdict"]["data"]["holder_pid"] == holder.pid


@pytest.mark.parametrize("version", ["0.5.3", "0.6.18.post1", "0.7.4"])
def test_real_decode_build_then_diagnose_finds_the_layout(tmp_path, version):
    """Families 0.4–0.6 and 0.7: a real decode module compiled by this box's nvcc (the stub
    libcuda and CUDA_HOME of warmup_helpers.build_env), then diagnose finds the versioned
    workspace and the module, and reports it healthy."""
    py = release_python(version)
    env = release_env(py, tmp_path, version)
    r = run_cli(["warmup", "--python", str(py), "--arch", "9.0a", "--modules",
                 "single-decode:f16:64", "--json"], env=env, timeout=600)
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    [m] = doc["modules"]
    assert m["status"] == "done", (m, r.stderr[-2000:])
    ws = workspace(tmp_path, version)
    assert m["module_dir"] == str(ws / "cached_ops" / m["name"])
    assert os.path.getsize(os.path.join(m["module_dir"], m["name"] + ".so")) > 0
    env["FLASHINFER_CUDA_ARCH_LIST"] = "9.0a"
    d = run_cli(["diagnose", "--python", str(py), "--json"], env=env)
    assert "Traceback" not in d.stderr
    diag = json.loads(d.stdout)
    problems = [f["id"] for f in diag["findings"] if f["severity"] in ("error", "warning")]
    assert problems == [], diag["findings"]
    assert diag["target"]["flashinfer"] == version
    from fidoctor.snapshot.context import build_context
    from fidoctor.snapshot.runner import gather_snapshot

    cache = gather_snapshot(build_context(python=str(py), env=env), only=["cache"]).data("cache")
    [w] = [w for w in cache["workspaces"] if w["path"] == str(ws)]
    assert (w["version"], w["arch"]) == (version, "90a"), w
    assert [mod["name"] for mod in w["modules"]] == [m["name"]]


def test_041_with_the_only_tvm_ffi_pypi_serves_its_builds_fail_and_warmup_says_why(tmp_path):
    """0.4.1 pins apache-tvm-ffi==0.1.0b15 (to run and to build), which PyPI no longer
    serves; the nearest release, 0.1.0, changed ``tvm::ffi::Tensor`` (``ndim()`` is a method,
    ``->ndim`` is gone), so every JIT module of 0.4.1 fails to compile in its own
    ``csrc/tvm_ffi_utils.h``. That is what installing 0.4.1 today gives (read in the sdist's
    requirements.txt and in tvm-ffi 0.1.0's tensor.h), so no 0.4.1 module can be cached here.
    Checked instead: warmup reaches the real nvcc build in 0.4.1's versioned workspace and
    quotes the real error line, without a traceback, caused by flashinfer-package-mismatch
    (tvm-ffi 0.1.0 does not meet 0.4.1's own Requires-Dist); diagnose names that cause and
    finds the workspace (layout and version) and the failed module in it (a failed build's
    dir is left as it is, for its build.ninja and objects to be read)."""
    py = release_python("0.4.1")
    env = release_env(py, tmp_path, "0.4.1")
    r = run_cli(["warmup", "--python", str(py), "--arch", "9.0a", "--modules",
                 "single-decode:f16:64", "--json"], env=env, timeout=600)
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.returncode == 1, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    assert doc["target"]["version"] == "0.4.1" and doc["target"]["family"] == "spec"
    [m] = doc["modules"]
    assert m["status"] == "failed", m
    assert "tvm_ffi_utils.h" in m["error"] and 'no member "ndim"' in m["error"], m["error"]
    ws = workspace(tmp_path, "0.4.1")
    assert m["module_dir"] == str(ws / "cached_ops" / m["name"])
    assert not os.path.exists(os.path.join(m["module_dir"], m["name"] + ".so"))
    assert m["verdict"]["caused_by"] == "flashinfer-package-mismatch", m["verdict"]
    env["FLASHINFER_CUDA_ARCH_LIST"] = "9.0a"
    d = run_cli(["diagnose", "--python", str(py), "--json"], env=env)
    assert "Traceback" not in d.stderr
    diag = json.loads(d.stdout)
    assert diag["target"]["flashinfer"] == "0.4.1"
    # the cause, read in 0.4.1's own METADATA (the quiet twins: 0.5.3, 0.6.18, 0.7.4 above)
    [c] = [f for f in diag["findings"] if f["id"] == "flashinfer-package-mismatch"]
    assert c["severity"] == "error" and c["subject"] == "apache-tvm-ffi"
    assert (c["data"]["version"], c["data"]["requirement"]) == ("0.1.0", "==0.1.0b15")
    [f] = [f for f in diag["findings"] if f["id"] == "cache-incomplete-module"]
    assert f["data"]["module_dir"] == m["module_dir"], f
    from fidoctor.snapshot.context import build_context
    from fidoctor.snapshot.runner import gather_snapshot

    cache = gather_snapshot(build_context(python=str(py), env=env), only=["cache"]).data("cache")
    [w] = [w for w in cache["workspaces"] if w["path"] == str(ws)]
    assert (w["version"], w["arch"]) == ("0.4.1", "90a"), w


KILLED_BUILD = """
import sys, torch
import flashinfer.jit as jit
gen = getattr(jit, "gen_single_decode_module", None)
if gen is None:
    from flashinfer.jit.attention import gen_single_decode_module as gen
spec = gen(torch.float16, torch.float16, torch.float16, 64, 64, 0, False, False)
print(spec.name, flush=True)
spec.build_and_load()
"""


@pytest.mark.parametrize("version", ["0.2.14.post1", "0.3.1.post1", "0.5.3", "0.6.18.post1",
                                     "0.7.4"])
def test_a_real_sigkill_of_a_first_call_build_is_found(tmp_path, procs, version):
    """The server's first call builds the module (FlashInfer's own build_and_load); it is
    SIGKILLed while nvcc runs. diagnose names the module: its orphaned compiler tree while it
    lives, or the half-built dir after. 0.2.14 and 0.3.1 could not finish this build here (no
    CUDA torch: the binding file fails), but their kernel's real nvcc runs for tens of seconds
    first, and that is where the kill lands. 0.4.1 is not here: its modules fail in nvcc's
    front end (see test_041_…), before any compiler runs long enough to be killed; its
    family's own kill is test_041_a_real_sigkill_of_the_import_time_c_dlpack_build."""
    import signal
    import subprocess

    from proc_helpers import wait_for

    py = release_python(version)
    env = release_env(py, tmp_path, version)
    if version.startswith(UNVERSIONED):
        env["TORCH_CUDA_ARCH_LIST"] = "9.0"  # their arch flags and workspace dir come from torch
    script = tmp_path / "server.py"
    script.write_text(KILLED_BUILD)
    server = procs.start([str(py), str(script)], env=env, stdout=subprocess.PIPE)
    name = server.stdout.readline().decode().strip()
    assert name.startswith("single_decode_with_kv_cache"), name
    procs.find("cicc", timeout=240)
    os.kill(server.pid, signal.SIGKILL)
    server.wait(10)
    mdir = str(workspace(tmp_path, version) / "cached_ops" / name)
    wait_for(lambda: os.path.isdir(mdir), what="the module dir")
    d = run_cli(["diagnose", "--python", str(py), "--json"], env=env)
    assert "Traceback" not in d.stderr
    diag = json.loads(d.stdout)
    hits = [f for f in diag["findings"]
            if f["id"] in ("build-process-stuck", "cache-incomplete-module", "jit-log-unfinished",
                           "build-killed")
            and (name in f["subject"] or name in json.dumps(f.get("data", {})))]
    assert hits, diag["findings"]
    assert not os.path.exists(os.path.join(mdir, name + ".so")) or any(
        f["id"] == "build-process-stuck" for f in hits)
    assert diag["target"]["flashinfer"] == version


def _wchan_spins(pid):
    """The process sleeps between polls, as FileBaton.wait() does (time.sleep(0.1))."""
    from fidoctor.proctree import SLEEP_WCHANS

    try:
        with open(f"/proc/{pid}/wchan") as f:
            w = f.read()
    except OSError:
        return False
    return any(x in w for x in SLEEP_WCHANS)


LEGACY_SERVER = """
import os, sys, torch
import torch.utils.cpp_extension as cpp_ext
if sys.argv[1:] == ["--cuda-torch-stand-in"] and cpp_ext.CUDA_HOME is None:
    cpp_ext.CUDA_HOME = os.environ["CUDA_HOME"]  # what a CUDA torch computes at import
import flashinfer.jit as jit
from flashinfer.jit import attention as att
args = (torch.float16, torch.float16, torch.float16, 64, 64, 0, False, False)
uri = getattr(att, "get_single_decode_uri", None) or jit.get_single_decode_uri
print(uri(*args), flush=True)
(getattr(jit, "gen_single_decode_module", None) or att.gen_single_decode_module)(*args)
"""


def _kill_mid_build_and_restart_on_the_baton(procs, server, compiler, baton, argv, env,
                                             first_line, py):
    """The kill/restart flow both baton tests share: once ``compiler`` runs under
    ``server`` (which holds torch's FileBaton ``baton``), SIGKILL the server, start ``argv``
    again, check it printed ``first_line`` and then spins in FileBaton.wait() (it never
    times out), and diagnose with ``--python py``. Returns the restarted process, the
    diagnosis JSON and its stale ``build-lock-held`` finding for ``baton``."""
    import signal
    import subprocess

    from proc_helpers import wait_for

    procs.find(compiler, timeout=240)
    assert baton.exists(), "torch holds its baton while it builds"
    os.kill(server.pid, signal.SIGKILL)
    server.wait(10)
    restarted = procs.start(argv, env=env, stdout=subprocess.PIPE)
    assert restarted.stdout.readline().strip() == first_line
    wait_for(lambda: _wchan_spins(restarted.pid), timeout=60, what="the restart to wait")
    time.sleep(1.0)
    assert restarted.poll() is None, "FileBaton.wait() has no timeout: the restart hangs"

    def look():
        d = run_cli(["diagnose", "--python", str(py), "--json"], env=env)
        assert "Traceback" not in d.stderr
        diag = json.loads(d.stdout)
        return diag, [f for f in diag["findings"] if f["id"] == "build-lock-held"
                      and f["data"].get("lock_path") == str(baton)]

    # A sleeping main thread is not proof the restart reached FileBaton.wait() (on a loaded
    # box an import can sleep on I/O first): look again until it is named as the waiter,
    # within a minute, then judge the last look.
    deadline = time.monotonic() + 60
    diag, found = look()
    while time.monotonic() < deadline and not (
            len(found) == 1 and found[0]["data"].get("waiter_pids") == [restarted.pid]):
        time.sleep(2.0)
        diag, found = look()
    [f] = found
    assert f["severity"] == "error" and "stale" in f["title"], f
    return restarted, diag, f


def test_025_a_real_sigkill_mid_build_leaves_torchs_baton_and_the_restart_hangs_on_it(
        tmp_path, procs):
    """Family 0.2.0–0.2.5: FlashInfer's flock (cached_ops/<name>.lock) wraps torch's
    cpp_extension.load, which takes its own FileBaton (cached_ops/<name>/lock). A server
    SIGKILLed mid-nvcc frees the flock (the kernel releases it) but leaves the baton; the
    restarted server passes the flock and spins in FileBaton.wait() forever. diagnose names
    the stale baton, the module and the spinning server.

    Stand-in, for the first server only: a CPU torch's cpp_extension.CUDA_HOME is None
    whatever the environment says (no CUDA torch can be installed here), so that server sets
    it to this box's toolkit, as a CUDA torch computes it at import; then torch's real build
    runs this release's real nvcc compile of the kernel (tens of seconds; the binding file
    would fail later for want of CUDA torch headers). The kill, the baton it leaves, the
    restarted server (no stand-in) and its endless wait are all real. The restart holds
    FlashInfer's flock while it spins on the baton: it must be named as the baton's waiter,
    and the unfinished ``Loading`` line is a build that can never finish (caused by the
    baton), not "a cold build" however busy the killed server's orphans still are."""
    import subprocess


    py = release_python("0.2.5")
    env = release_env(py, tmp_path, "0.2.5")
    env["TORCH_CUDA_ARCH_LIST"] = "9.0"
    script = tmp_path / "server.py"
    script.write_text(LEGACY_SERVER)
    server = procs.start([str(py), str(script), "--cuda-torch-stand-in"], env=env,
                         stdout=subprocess.PIPE)
    name = server.stdout.readline().decode().strip()
    assert name.startswith("single_decode_with_kv_cache"), name
    mdir = workspace(tmp_path, "0.2.5") / "cached_ops" / name
    baton = mdir / "lock"
    restarted, diag, f = _kill_mid_build_and_restart_on_the_baton(
        procs, server, "cicc", baton, [str(py), str(script)], env, name.encode(), py)
    assert f["data"]["waiter_pids"] == [restarted.pid], f
    assert f["data"]["affects"] == [str(mdir)] and f["fixes"][0]["id"] == "remove-stale-baton"
    # the log's unfinished Loading line is not "a cold build": it can never finish
    [j] = [j for j in diag["findings"] if j["id"] == "jit-log-unfinished"]
    assert j["severity"] == "error" and j["data"]["verdict"] == "stale-baton", j
    assert j["caused_by"] == "build-lock-held"
    order = [x["id"] for x in diag["findings"]]
    assert order.index("build-lock-held") < order.index("jit-log-unfinished")
    assert all("beside it" not in x["title"] for x in diag["findings"]), "it waits, it does "\
        "not compile beside the orphans"
    # the restart holds FlashInfer's flock while it spins: not reported as an idle holder
    assert [x for x in diag["findings"] if x["id"] == "build-lock-held"] == [f]
    assert diag["target"]["flashinfer"] == "0.2.5"


def test_041_a_real_sigkill_of_the_import_time_c_dlpack_build_leaves_a_stale_baton(
        tmp_path, procs):
    """0.4.x: ``import flashinfer`` makes apache-tvm-ffi compile its ``c_dlpack`` torch
    extension under TORCH_EXTENSIONS_DIR, guarded by torch's FileBaton. All real here: the
    release's own import starts that g++ build, a SIGKILL while cc1plus runs leaves the baton,
    the restarted import spins on it forever, and diagnose names the stale baton of the
    extension with the spinning import as its waiter."""
    import subprocess


    py = release_python("0.4.1")
    env = build_env(py.parent.parent, tmp_path)
    env["TORCH_EXTENSIONS_DIR"] = str(tmp_path / "torch_extensions")
    baton = tmp_path / "torch_extensions" / "c_dlpack" / "lock"
    script = tmp_path / "server.py"
    script.write_text("print('importing', flush=True)\nimport flashinfer\n")
    server = procs.start([str(py), str(script)], env=env, stdout=subprocess.PIPE)
    assert server.stdout.readline().strip() == b"importing"
    restarted, diag, f = _kill_mid_build_and_restart_on_the_baton(
        procs, server, "cc1plus", baton, [str(py), str(script)], env, b"importing", py)
    assert f["data"]["extension"] == "c_dlpack" and "torch extension c_dlpack" in f["title"]
    assert f["data"]["waiter_pids"] == [restarted.pid], f
