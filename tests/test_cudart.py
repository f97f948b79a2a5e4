"""Which libcudart the target loads, and whether cached modules can bind to it.

Every verdict fidoctor gives here is checked against the real dynamic loader:
the seed box's venv python imports the stand-in torch (which pulls pip's
libcudart through libtorch_cuda.so's RPATH) and dlopens each module with
ctypes, in a subprocess. fidoctor must say "fails" exactly where it fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Dict, List

import psutil
import pytest
from conftest import run_cli
from cudart_helpers import (
    BYVERSION_MOD,
    WHEEL_12_4,
    WHEEL_12_9,
    Seed,
    real_load,
)

from fidoctor.flashinfer import cudart as rules

pytestmark = pytest.mark.timeout(180)


def diagnose(seed: Seed, *extra: str, env: Dict[str, str] = None) -> Dict:
    r = run_cli(["diagnose", "--python", str(seed.v["python"]), "--json", *extra],
                env=env or seed.env())
    assert r.returncode in (0, 1), r.stderr
    assert "Traceback" not in r.stderr
    return json.loads(r.stdout)


def by_id(diag: Dict, fid: str) -> List[Dict]:
    return [f for f in diag["findings"] if f["id"] == fid]


@pytest.fixture(scope="module")
def seed(tmp_path_factory) -> Seed:
    return Seed(tmp_path_factory.mktemp("seed"))


@pytest.fixture(scope="module")
def matched(tmp_path_factory) -> Seed:
    return Seed(tmp_path_factory.mktemp("matched"), runtime=WHEEL_12_9)


@pytest.fixture(scope="module")
def seed_diag(seed) -> Dict:
    return diagnose(seed)


def test_seed_reports_missing_symbol_with_the_evidence_chain(seed, seed_diag):
    found = by_id(seed_diag, "cudart-missing-symbol")
    assert [f["subject"] for f in found] == [str(seed.modules[BYVERSION_MOD])]
    f = found[0]
    assert f["severity"] == "error"
    d = f["data"]
    pip = os.path.realpath(seed.v["pip_cudart"])
    assert d["runtime_path"] == pip and d["pip_cudart_path"] == pip
    assert d["runtime_version"] == WHEEL_12_4
    assert d["runtime_version_source"] == "package metadata (nvidia-cuda-runtime-cu12)"
    assert d["missing"] == [["cudaGetDriverEntryPointByVersion", "libcudart.so.12",
                             "libcudart.so.12"]]
    assert d["provider_path"] == str(seed.toolkit / "lib64" / "libcudart.so.12")
    assert d["provider_version"] == WHEEL_12_9
    assert d["cuda_lib_path"] == str(seed.toolkit / "lib64")
    assert d["toolkit_path"] == str(seed.toolkit) and d["toolkit_version"] == "12.9.86"
    assert d["module_dir"] == str(seed.modules[BYVERSION_MOD].parent)
    assert d["upgrade_spec"] == "nvidia-cuda-runtime-cu12==12.9.*"
    text = "\n".join(f["evidence"])
    assert "RPATH $ORIGIN/../../nvidia/cuda_runtime/lib" in text
    assert "libtorch_cuda.so NEEDED libcudart.so.12" in text
    assert "exports no cudaGetDriverEntryPointByVersion@libcudart.so.12" in text
    ids = [x["id"] for x in f["fixes"]]
    assert ids[0] == "preload-cudart"
    assert {"quarantine-module", "upgrade-pip-cudart", "replace-pip-cudart"} <= set(ids)
    safety = [x["safety"] for x in f["fixes"]]
    assert safety == sorted(safety, key=["safe", "caution", "risky"].index)


def test_seed_json_validates_against_the_schema(seed_diag):
    from importlib import resources

    import jsonschema

    schema = json.loads(resources.files("fidoctor").joinpath(
        "schema/diagnose.schema.json").read_text())
    jsonschema.validate(seed_diag, schema)


def test_seed_reports_version_skew_as_error(seed_diag):
    skew = by_id(seed_diag, "cuda-version-skew")
    assert [s["subject"] for s in skew] == ["nvcc-vs-runtime"]
    s = skew[0]
    assert s["severity"] == "error"
    assert s["data"]["nvcc_version"] == "12.9.86" and s["data"]["runtime_version"] == WHEEL_12_4
    assert "cudaGetDriverEntryPointByVersion" in s["data"]["lacking"]
    assert {"preload-cudart", "upgrade-pip-cudart", "replace-pip-cudart"} <= {
        x["id"] for x in s["fixes"]}


def test_real_loader_fails_exactly_where_fidoctor_says(seed, seed_diag):
    flagged = {f["subject"] for f in by_id(seed_diag, "cudart-missing-symbol")}
    for name, so in seed.modules.items():
        got = real_load(seed.v["python"], so, seed.env())
        assert got["mapped"] == [str(seed.v["pip_cudart"])]
        assert got["ok"] == (str(so) not in flagged), (name, got)
        if not got["ok"]:
            assert "undefined symbol: cudaGetDriverEntryPointByVersion, version libcudart.so.12" \
                in got["error"]
    assert flagged  # the seed must fail somewhere, or this test proves nothing


def test_preload_fix_data_really_fixes_the_load(seed, seed_diag):
    """The provider fidoctor names, LD_PRELOADed, makes the real load succeed — and
    fidoctor, given that environment, stops reporting the problem."""
    f = by_id(seed_diag, "cudart-missing-symbol")[0]
    env = seed.env(LD_PRELOAD=f["data"]["provider_path"])
    so = seed.modules[BYVERSION_MOD]
    assert real_load(seed.v["python"], so, env)["ok"] is True
    after = diagnose(seed, env=env)
    assert not by_id(after, "cudart-missing-symbol")
    assert not by_id(after, "cuda-version-skew")


def test_matched_box_reports_neither(matched):
    diag = diagnose(matched)
    assert not by_id(diag, "cudart-missing-symbol")
    assert not by_id(diag, "cuda-version-skew")
    assert diag["gather"]["cudart"]["status"] == "ok"
    for so in matched.modules.values():
        assert real_load(matched.v["python"], so, matched.env())["ok"] is True


def test_flashinfer_preload_is_modelled(tmp_path):
    """FlashInfer ≥0.2.3 preloads $CUDA_LIB_PATH/libcudart.so.12 RTLD_GLOBAL after torch:
    fidoctor predicts the module then loads, and the real loader agrees."""
    seed = Seed(tmp_path, flashinfer="0.2.5")
    env = seed.env(CUDA_LIB_PATH=str(seed.toolkit / "lib64"))
    diag = diagnose(seed, env=env)
    assert not by_id(diag, "cudart-missing-symbol")
    got = real_load(seed.v["python"], seed.modules[BYVERSION_MOD], env,
                    [str(seed.toolkit / "lib64" / "libcudart.so.12")])
    assert got["ok"] is True
    # Pointing CUDA_LIB_PATH where there is no libcudart.so.12 brings the failure back.
    env = seed.env(CUDA_LIB_PATH=str(tmp_path / "nowhere"))
    assert [f["subject"] for f in by_id(diagnose(seed, env=env), "cudart-missing-symbol")] == [
        str(seed.modules[BYVERSION_MOD])]


def test_runpath_lets_ld_library_path_win(tmp_path):
    """RUNPATH (unlike RPATH) comes after LD_LIBRARY_PATH: fidoctor and ld.so agree."""
    seed = Seed(tmp_path, runpath=True)
    env = seed.env(LD_LIBRARY_PATH=str(seed.toolkit / "lib64"))
    snap = tmp_path / "s.json"
    r = run_cli(["snapshot", "--python", str(seed.v["python"]), "-o", str(snap)], env=env)
    assert r.returncode == 0, r.stderr
    cud = json.loads(snap.read_text())["sections"]["cudart"]["data"]
    assert cud["torch"]["runpath"] and not cud["torch"]["rpath"]
    predicted = cud["loaded"][0]["path"]
    assert predicted == os.path.realpath(seed.toolkit / "lib64" / "libcudart.so.12")
    got = real_load(seed.v["python"], seed.modules[BYVERSION_MOD], env)
    assert [os.path.realpath(p) for p in got["mapped"]] == [predicted]
    assert got["ok"] is True
    assert not by_id(diagnose(seed, env=env), "cudart-missing-symbol")


def test_rpath_beats_ld_library_path(seed):
    env = seed.env(LD_LIBRARY_PATH=str(seed.toolkit / "lib64"))
    diag = diagnose(seed, env=env)
    assert [f["subject"] for f in by_id(diag, "cudart-missing-symbol")] == [
        str(seed.modules[BYVERSION_MOD])]
    assert real_load(seed.v["python"], seed.modules[BYVERSION_MOD], env)["ok"] is False


def test_pid_reads_what_is_really_mapped(seed):
    """--pid: a live process that imported torch; /proc/PID/maps is the witness."""
    p = subprocess.Popen(
        [str(seed.v["python"]), "-c", "import torch, sys; print('ready', flush=True); "
         "sys.stdin.read()"],
        env=seed.env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        diag = diagnose(seed, "--pid", str(p.pid), env=seed.env())
        f = by_id(diag, "cudart-missing-symbol")
        assert [x["subject"] for x in f] == [str(seed.modules[BYVERSION_MOD])]
        assert f[0]["data"]["loaded_source"] == f"/proc/{p.pid}/maps"
        assert any(f"confirmed by /proc/{p.pid}/maps" in e for e in f[0]["evidence"])
    finally:
        p.kill()
        p.wait(timeout=10)
    assert not psutil.pid_exists(p.pid) or psutil.Process(p.pid).status() == "zombie"


def test_pid_without_cudart_mapped_falls_back_to_prediction(seed):
    p = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                         env=seed.env(), stdin=subprocess.PIPE)
    try:
        time.sleep(0.2)
        r = run_cli(["snapshot", "--pid", str(p.pid), "--python", str(seed.v["python"]),
                     "-o", str(seed.root / "pid.json")], env=seed.env())
        assert r.returncode == 0, r.stderr
        cud = json.loads((seed.root / "pid.json").read_text())["sections"]["cudart"]["data"]
        assert cud["observed"]["paths"] == [] and cud["loaded_source"] == "prediction"
    finally:
        p.kill()
        p.wait(timeout=10)


def test_deep_imports_torch_in_the_target(seed):
    diag = diagnose(seed, "--deep")
    f = by_id(diag, "cudart-missing-symbol")
    assert f and f[0]["data"]["loaded_source"] == "--deep: import torch in the target"


def test_replay_gives_identical_findings(seed, tmp_path):
    snap = tmp_path / "snap.json"
    r = run_cli(["snapshot", "--python", str(seed.v["python"]), "-o", str(snap)],
                env=seed.env())
    assert r.returncode == 0, r.stderr
    a = run_cli(["diagnose", "--from", str(snap), "--json"], env=seed.env())
    b = run_cli(["diagnose", "--from", str(snap), "--json"], env={"PATH": "/usr/bin:/bin"})
    fa = [f for f in json.loads(a.stdout)["findings"] if f["id"].startswith("cud")]
    fb = [f for f in json.loads(b.stdout)["findings"] if f["id"].startswith("cud")]
    assert fa == fb and {f["id"] for f in fa} >= {"cudart-missing-symbol", "cuda-version-skew"}


def test_libcudart_symlink_loop_is_a_fact_not_a_crash(tmp_path):
    seed = Seed(tmp_path)
    pip = seed.v["pip_cudart"]
    pip.unlink()
    os.symlink("loop-b", pip.parent / "loop-a")
    os.symlink("loop-a", pip.parent / "loop-b")
    os.symlink("loop-a", pip)
    snap = tmp_path / "s.json"
    r = run_cli(["snapshot", "--python", str(seed.v["python"]), "-o", str(snap)], env=seed.env())
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    cud = json.loads(snap.read_text())["sections"]["cudart"]["data"]
    libs = cud["libraries"]
    assert any(lib.get("error") == "symlink loop" for lib in libs.values())
    diag = diagnose(seed)
    # Nothing loadable via the RPATH: no claim about missing symbols can be made safely.
    assert not by_id(diag, "cudart-missing-symbol")


# --- the loader rules as pure functions -------------------------------------------------

def test_search_order_rpath_vs_runpath():
    rp = rules.search_dirs("$ORIGIN/../x", None, "/a/lib", "/llp")
    assert [d for d, _ in rp] == ["/a/x", "/llp"]
    run = rules.search_dirs("$ORIGIN/../x", "$ORIGIN/../y", "/a/lib", "/llp")
    assert [d for d, _ in run] == ["/llp", "/a/y"]  # RPATH ignored when RUNPATH is set


def test_parse_ldconfig_and_maps():
    text = ("2 libs found in cache `/etc/ld.so.cache'\n"
            "\tlibcudart.so.12 (libc6,x86-64) => /usr/local/cuda-12.9/lib64/libcudart.so.12\n"
            "\tlibcudart.so.12 (libc6) => /usr/lib32/libcudart.so.12\n")
    assert rules.parse_ldconfig(text) == {
        "libcudart.so.12": ["/usr/local/cuda-12.9/lib64/libcudart.so.12"]}
    maps = ("7f0 r--p 0 08:01 12 /v/nvidia/cuda_runtime/lib/libcudart.so.12\n"
            "7f1 r-xp 0 08:01 12 /v/nvidia/cuda_runtime/lib/libcudart.so.12\n"
            "7f2 r--p 0 08:01 13 /t/libcudart.so.12.9.79 (deleted)\n7f3 rw-p 0 00:00 0\n")
    assert rules.parse_maps(maps) == ["/v/nvidia/cuda_runtime/lib/libcudart.so.12",
                                      "/t/libcudart.so.12.9.79"]


def test_versioned_symbol_matching():
    ex = {"cudaMalloc": "@@libcudart.so.12"}
    assert rules.exports_symbol(ex, "cudaMalloc", "libcudart.so.12")
    assert not rules.exports_symbol(ex, "cudaMalloc", "libcudart.so.13")
    assert rules.exports_symbol(ex, "cudaMalloc", None)
    assert not rules.exports_symbol(ex, "cudaFree", None)
    assert rules.fi_preloads("0.2.3") and not rules.fi_preloads("0.2.2")
    assert rules.fi_preloads(None) is None


BYV = "cudaGetDriverEntryPointByVersion"


def test_modules_missing_answers_each_module_whatever_it_shares():
    """Modules judged once per distinct NEEDED/undefined pair (shared objects as in a live
    snapshot, equal copies as in a replayed one) get exactly the per-module answer."""
    lib = "/cuda/lib64/libcudart.so.12"
    libraries = {lib: {"path": lib, "exports": {"cudaMalloc": "@@libcudart.so.12"}}}
    loaded = [{"path": lib, "soname": "libcudart.so.12", "global": True}]
    needs_byv = [["cudaMalloc", "libcudart.so.12", "libcudart.so.12"],
                 [BYV, "libcudart.so.12", "libcudart.so.12"]]
    fine = [["cudaMalloc", "libcudart.so.12", "libcudart.so.12"]]
    needed = ["libcudart.so.12"]
    modules = {
        "/c/b.so": {"needed": needed, "undefined": needs_byv},        # shared objects
        "/c/a.so": {"needed": needed, "undefined": needs_byv},
        "/c/c.so": {"needed": list(needed), "undefined": json.loads(json.dumps(needs_byv))},
        "/c/d.so": {"needed": needed, "undefined": fine},
        "/c/e.so": {"error": "truncated ELF"},
    }
    got = rules.modules_missing(modules, loaded, {}, libraries)
    assert [p for p, _, _ in got] == ["/c/a.so", "/c/b.so", "/c/c.so"]
    for _path, mod, r in got:
        assert r == rules.missing_symbols(mod, loaded, {}, libraries)
        assert r["missing"] == [[BYV, "libcudart.so.12", "libcudart.so.12"]]
