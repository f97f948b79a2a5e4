"""nvcc-arch-unsupported, nvcc-flag-unsupported and build-flags-debug on real toolchains.

Real parts (tests/toolchain_helpers.py): NVIDIA's CUDA 11.8 nvcc from Debian's
non-free package, this box's real CUDA 13.0 nvcc (/usr/local/cuda), and
build.ninja files written by real FlashInfer 0.7.2 (``JitSpec.write_ninja``).
Each finding is checked against what the real nvcc does with the same input.
The stand-in toolkits of cudart_helpers (an nvcc script that only prints a
``--version`` banner) cover the "nvcc cannot be asked" fallback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import diagnose_box, snapshot_of
from toolchain_helpers import cuda118, fi_generated_modules, gcc11

from fidoctor.diagnosis import diagnose
from fidoctor.probes._toolchain import vtuple

pytestmark = pytest.mark.timeout(600)
REAL13 = "/usr/local/cuda"


@pytest.fixture(autouse=True)
def own_tool_cache(tmp_path, monkeypatch):
    """fidoctor's tool cache in the test's own dir: cold first, then warm."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.fixture(scope="session")
def cu118() -> Path:
    return cuda118()


@pytest.fixture(scope="session")
def generated(tmp_path_factory) -> dict:
    return fi_generated_modules(tmp_path_factory.mktemp("figen"))


def by_id(diag, fid):
    return [f for f in diag.findings if f.id == fid]


def inconclusive(diag, fid):
    return [i.reason for i in diag.inconclusive if i.probe == fid]


def need_real13():
    if not os.access(f"{REAL13}/bin/nvcc", os.X_OK):
        pytest.skip("no real nvcc at /usr/local/cuda")


def assert_newer_toolkit_advised(f, snap):
    """Both nvcc probes offer the newest other installed toolkit first (cuda-home-advice)."""
    here = f.data["toolkit_path"]
    newer = sorted((t for t in snap.data("toolkit")["installed"]
                    if t.get("has_nvcc") and t["path"] != here and vtuple(t.get("version"))),
                   key=lambda t: vtuple(t["version"]))
    if not newer:
        assert all(x.id != "cuda-home-advice" for x in f.fixes)
        return
    assert f.fixes[0].id == "cuda-home-advice" and f.fixes[0].safety == "caution"
    assert f.data["suggested_cuda_home"] == newer[-1]["path"]
    assert f.fixes[0].commands == [f"export CUDA_HOME={newer[-1]['path']}"]


def real_nvcc_error(nvcc: Path, *args: str, cwd: Path) -> str:
    (cwd / "k.cu").write_text("__global__ void k(float *x) { x[0] = 1; }\n")
    r = subprocess.run([str(nvcc), *args, "-ccbin", str(gcc11() / "gcc-11"), "-c", "k.cu",
                        "-o", "k.o"], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    return r.stderr + r.stdout


# --- nvcc-arch-unsupported -------------------------------------------------------------

def test_cuda_11_8_refuses_compute_90a(box, cu118, tmp_path):
    box.workspace()
    diag = diagnose_box(box, CUDA_HOME=str(cu118), FLASHINFER_CUDA_ARCH_LIST="9.0")
    [f] = by_id(diag, "nvcc-arch-unsupported")
    assert f.severity == "error" and f.data["affects"] == ["*"]
    [bad] = f.data["unsupported"]
    assert bad["arch"] == "90a" and bad["entry"] == "9.0" and bad["how"] == "nvcc --dryrun"
    assert "Unsupported gpu architecture 'compute_90a'" in bad["message"]
    assert "90" in f.data["list_gpu_arch"] and "90a" not in f.data["list_gpu_arch"]
    assert any("--list-gpu-arch: compute_35" in e for e in f.evidence)
    assert_newer_toolkit_advised(f, diag.snapshot)
    # what the probe claims is what the real nvcc does with a real compile
    assert "Unsupported gpu architecture 'compute_90a'" in real_nvcc_error(
        cu118 / "bin" / "nvcc", "-gencode=arch=compute_90a,code=sm_90a", cwd=tmp_path)


def test_cuda_11_8_builds_sm80_and_cuda_13_builds_90a(box, cu118):
    need_real13()
    box.workspace()
    assert not by_id(diagnose_box(box, CUDA_HOME=str(cu118), FLASHINFER_CUDA_ARCH_LIST="8.0"),
                     "nvcc-arch-unsupported")
    diag = diagnose_box(box, CUDA_HOME=REAL13, FLASHINFER_CUDA_ARCH_LIST="9.0 10.0")
    assert not by_id(diag, "nvcc-arch-unsupported")
    assert not inconclusive(diag, "nvcc-arch-unsupported")
    checks = diag.snapshot.data("toolchain")["archs"]["checks"]
    assert checks["90a"]["ok"] is True and checks["100a"]["ok"] is True


def test_arch_from_the_cache_dirs_when_nothing_names_one(box, cu118):
    box.workspace(arch="90a")
    [f] = by_id(diagnose_box(box, CUDA_HOME=str(cu118)), "nvcc-arch-unsupported")
    assert f.data["source"].startswith("the cache's arch dirs")


def test_no_arch_anywhere_is_inconclusive_not_healthy(box, cu118):
    diag = diagnose_box(box, CUDA_HOME=str(cu118))
    assert not by_id(diag, "nvcc-arch-unsupported")
    assert "no arch to check" in inconclusive(diag, "nvcc-arch-unsupported")[0]


def test_sm120_on_cuda_11_8_is_refused_by_flashinfer_itself(box, cu118):
    box.workspace()
    [f] = by_id(diagnose_box(box, CUDA_HOME=str(cu118), FLASHINFER_CUDA_ARCH_LIST="12.0"),
                "nvcc-arch-unsupported")
    assert "SM 120 requires CUDA >= 12.8" in f.data["unsupported"][0]["message"]


def test_nvcc_that_cannot_be_asked_falls_back_to_the_known_floor(box, tmp_path):
    """A stand-in nvcc (prints only its --version banner): dryrun and --list-gpu-arch fail
    without nvcc's refusal line, so the toolkit's release decides."""
    from cudart_helpers import make_toolkit

    box.workspace()
    old = make_toolkit(tmp_path / "o", release="11.8", full="11.8.89")
    [f] = by_id(diagnose_box(box, CUDA_HOME=str(old), FLASHINFER_CUDA_ARCH_LIST="9.0a"),
                "nvcc-arch-unsupported")
    assert f.data["unsupported"][0]["how"] == "the toolkit's known floor"
    new = make_toolkit(tmp_path / "n")  # 12.9
    assert not by_id(diagnose_box(box, CUDA_HOME=str(new), FLASHINFER_CUDA_ARCH_LIST="9.0a"),
                     "nvcc-arch-unsupported")


def test_nvcc_answers_are_cached_per_toolkit(box, cu118):
    box.workspace()
    snap = snapshot_of(box, CUDA_HOME=str(cu118), FLASHINFER_CUDA_ARCH_LIST="9.0")
    q = snap.data("toolchain")["queries"]
    nvcc_runs = [r for r in q["ran"] if r.startswith("nvcc ")]
    assert len(nvcc_runs) == 3  # --help, --list-gpu-arch, one dryrun
    assert len(set(q["ran"])) == len(q["ran"])  # nothing asked twice (repeats are hits)
    again = snapshot_of(box, CUDA_HOME=str(cu118), FLASHINFER_CUDA_ARCH_LIST="9.0")
    q2 = again.data("toolchain")["queries"]
    assert q2["ran"] == [] and q2["hits"] == len(q["ran"]) + q["hits"]
    assert again.data("toolchain")["archs"] == snap.data("toolchain")["archs"]


# --- nvcc-flag-unsupported -------------------------------------------------------------

def put(box, src: Path) -> Path:
    ws = box.workspace()
    dst = ws / "cached_ops" / src.name
    shutil.copytree(src, dst)
    return dst


def test_flashinfer_0_7_flags_unknown_to_cuda_11_8(box, cu118, generated, tmp_path):
    mod = put(box, generated["release"])
    diag = diagnose_box(box, CUDA_HOME=str(cu118), FLASHINFER_CUDA_ARCH_LIST="8.0")
    [f] = by_id(diag, "nvcc-flag-unsupported")
    assert f.severity == "error" and f.data["affects"] == [mod.name]
    assert_newer_toolkit_advised(f, diag.snapshot)
    assert "--compress-mode" in f.data["unknown"]
    # FlashInfer gates this one on CUDA >= 12.8: never held against 11.8
    assert "-static-global-template-stub" not in f.data["unknown"]
    assert "Unknown option '--compress-mode=size'" in real_nvcc_error(
        cu118 / "bin" / "nvcc", "--compress-mode=size", cwd=tmp_path)


def test_flashinfer_0_7_flags_known_to_cuda_13(box, generated):
    need_real13()
    put(box, generated["release"])
    diag = diagnose_box(box, CUDA_HOME=REAL13)
    assert not by_id(diag, "nvcc-flag-unsupported")
    assert not inconclusive(diag, "nvcc-flag-unsupported")


def test_flag_from_the_env_is_named(box, cu118, generated, tmp_path):
    mod = put(box, generated["release"])
    ninja = mod / "build.ninja"
    ninja.write_text(ninja.read_text().replace("--compress-mode=size $",
                                               "--compress-mode=size $\n    --no-such-flag $"))
    [f] = by_id(diagnose_box(box, CUDA_HOME=str(cu118), FLASHINFER_EXTRA_CUDAFLAGS="--no-such-flag"),
                "nvcc-flag-unsupported")
    assert f.data["from_env"] == ["FLASHINFER_EXTRA_CUDAFLAGS"] and f.data["affects"] == ["*"]
    assert "--no-such-flag" in f.fixes[0].description
    assert "FLASHINFER_EXTRA_CUDAFLAGS" in f.fixes[0].description


def test_flag_from_nvcc_append_flags_without_any_cached_module(box):
    """No build.ninja yet: a flag nvcc itself takes from NVCC_APPEND_FLAGS still reaches every
    build; the real CUDA 13.0 nvcc refuses an unknown one and accepts a known one."""
    need_real13()
    [f] = by_id(diagnose_box(box, CUDA_HOME=REAL13, NVCC_APPEND_FLAGS="--no-such-flag=1"),
                "nvcc-flag-unsupported")
    assert f.data["from_env"] == ["NVCC_APPEND_FLAGS"] and f.data["unknown"] == {
        "--no-such-flag": []}
    assert not by_id(diagnose_box(box, CUDA_HOME=REAL13, NVCC_APPEND_FLAGS="-lineinfo"),
                     "nvcc-flag-unsupported")


# --- build-flags-debug -----------------------------------------------------------------

def test_verbose_build_is_a_debug_build(box, generated):
    mod = put(box, generated["debug"])
    put(box, generated["release"])
    [f] = by_id(diagnose_box(box), "build-flags-debug")
    assert f.severity == "warning" and f.data["affects"] == [mod.name]
    assert set(f.data["modules"][mod.name]) >= {"-O0", "--device-debug"}
    assert f.fixes[0].id == "disable-jit-debug" and f.fixes[0].safety == "safe"


def test_env_asking_for_debug_fires_before_any_build(box):
    [f] = by_id(diagnose_box(box, FLASHINFER_JIT_VERBOSE="1"), "build-flags-debug")
    assert f.data["env_asks"].startswith("FLASHINFER_JIT_VERBOSE=1")
    assert f.data["env"] == {"FLASHINFER_JIT_DEBUG": "0"}


def test_debug_build_of_another_version_the_target_never_loads_is_quiet(box, generated):
    """A debug-built module in the workspace of FlashInfer 0.7.1 (left behind by an upgrade),
    the real FlashInfer 0.7.2 target with its own release build: the target never loads or
    rebuilds the 0.7.1 module, so no warning and no "rebuild the debug-built module" fix (it
    said "1 cached module(s) were built with device debug flags"); cache-stale-version lists
    the dir. The 0.7.2 target's own debug-built module still fires."""
    from warmup_helpers import target_venv

    py = str(target_venv())
    old = box.workspace(version="0.7.1") / "cached_ops" / generated["debug"].name
    shutil.copytree(generated["debug"], old)
    put(box, generated["release"])
    diag = diagnose_box(box, python=py)
    assert not by_id(diag, "build-flags-debug")
    assert [str(old.parent.parent) in f.data["workspaces"] for f in by_id(
        diag, "cache-stale-version")] == [True]
    # nor a 0.2.x-0.4.0 leftover (the unversioned layout), which 0.7.2 never builds into
    shutil.copytree(generated["debug"], box.workspace(version=None, arch="90") / "cached_ops"
                    / "leftover_decode")
    assert not by_id(diagnose_box(box, python=py), "build-flags-debug")
    mine = put(box, generated["debug"])
    [f] = by_id(diagnose_box(box, python=py), "build-flags-debug")
    assert f.data["affects"] == [mine.name] and f.data["module_dir"] == str(mine)


def test_same_module_name_in_another_version_does_not_hide_the_targets_own(box, generated):
    """The target's own debug-built module, and a module of the same name in the workspace of
    FlashInfer 0.7.4 (a downgrade back to the real 0.7.2 target; a release build.ninja that
    real FlashInfer 0.7.2 wrote, copied under the same name). The toolchain facts are keyed by
    module name: the 0.7.4 entry, scanned later, replaced the target's own and
    build-flags-debug said nothing."""
    from warmup_helpers import target_venv

    mine = put(box, generated["debug"])
    other = box.workspace(version="0.7.4") / "cached_ops" / mine.name
    shutil.copytree(generated["release"], other)
    [f] = by_id(diagnose_box(box, python=str(target_venv())), "build-flags-debug")
    assert f.data["affects"] == [mine.name] and f.data["module_dir"] == str(mine)


@pytest.mark.parametrize("env", [{}, {"FLASHINFER_JIT_VERBOSE": "1", "FLASHINFER_JIT_DEBUG": "0"},
                                 {"FLASHINFER_JIT_DEBUG": "0"}])
def test_release_build_and_verbose_without_debug_are_quiet(box, generated, env):
    put(box, generated["release"])
    assert not by_id(diagnose_box(box, **env), "build-flags-debug")


def test_disable_jit_debug_plan_writes_the_env_file(box, tmp_path):
    import sys

    from fidoctor.fixes import FixContext, choose

    [f] = by_id(diagnose_box(box, FLASHINFER_JIT_VERBOSE="1"), "build-flags-debug")
    ctx = FixContext(txid="t", state=str(tmp_path / "state"), env={}, python=sys.executable)
    plan, _ = choose(f, ctx)
    assert plan.fix_id == "disable-jit-debug" and plan.env == {"FLASHINFER_JIT_DEBUG": "0"}


def test_replayed_snapshot_gives_the_same_verdicts(box, cu118, generated, tmp_path):
    from fidoctor.snapshot import Snapshot

    put(box, generated["debug"])
    snap = snapshot_of(box, CUDA_HOME=str(cu118), FLASHINFER_CUDA_ARCH_LIST="9.0")
    p = tmp_path / "snap.json"
    snap.save(str(p))
    a, b = diagnose(snap), diagnose(Snapshot.load(str(p)))
    ids = ("nvcc-arch-unsupported", "nvcc-flag-unsupported", "build-flags-debug")
    assert [f.to_dict() for f in a.findings if f.id in ids] == \
           [f.to_dict() for f in b.findings if f.id in ids]
    assert {f.id for f in a.findings} >= set(ids)


def test_a_half_built_module_points_to_the_toolchain_cause(box, cu118, generated):
    """FlashInfer's own build.ninja and no .so (the build died at its first nvcc call): the
    symptom names a toolchain cause, and its rebuild fix is held back behind it."""
    put(box, generated["release"])
    diag = diagnose_box(box, CUDA_HOME=str(cu118), FLASHINFER_CUDA_ARCH_LIST="9.0")
    causes = {"nvcc-arch-unsupported", "nvcc-flag-unsupported", "host-compiler-unsupported"}
    assert causes <= {f.id for f in diag.findings}
    [sym] = [f for f in diag.findings if f.id == "cache-incomplete-module"]
    assert sym.caused_by in causes
    assert all(fx.id != "quarantine-module" for fx in sym.fixes)
    [cause] = [f for f in diag.findings if f.id == sym.caused_by]
    assert sym.fixes[0].safety == cause.fixes[0].safety  # it said safe for a caution fix
    order = [f.id for f in diag.findings]
    assert order.index(sym.caused_by) < order.index("cache-incomplete-module")


def test_torch_arch_list_is_ignored_by_flashinfer_0_7(box):
    """FlashInfer 0.7 never reads TORCH_CUDA_ARCH_LIST: CUDA 13.0 dropped sm_70, yet a
    '7.0' there must not be held against a 0.7 target (the cache's 90a dir decides)."""
    need_real13()
    from warmup_helpers import target_venv

    box.workspace()
    snap = snapshot_of(box, python=str(target_venv()), CUDA_HOME=REAL13,
                       TORCH_CUDA_ARCH_LIST="7.0")
    req = snap.data("toolchain")["archs"]
    assert req["source"].startswith("the cache's arch dirs")
    assert not [f for f in diagnose(snap).findings if f.id == "nvcc-arch-unsupported"]


def test_torch_arch_list_counts_for_flashinfer_0_2_5(box):
    """0.2.5 builds through torch's cpp_extension, which passes TORCH_CUDA_ARCH_LIST on: the
    real CUDA 13.0 nvcc refuses compute_70 (Volta was dropped in 13.0)."""
    need_real13()
    from cudart_helpers import make_venv

    v = make_venv(box.base.parent, "12.9.79", flashinfer="0.2.5")
    box.workspace(version=None, arch="90")
    diag = diagnose(snapshot_of(box, python=str(v["python"]), CUDA_HOME=REAL13,
                                TORCH_CUDA_ARCH_LIST="7.0;9.0"))
    [f] = [f for f in diag.findings if f.id == "nvcc-arch-unsupported"]
    assert f.data["source"] == "TORCH_CUDA_ARCH_LIST"
    assert [b["arch"] for b in f.data["unsupported"]] == ["70"]
    assert "Unsupported gpu architecture 'compute_70'" in f.data["unsupported"][0]["message"]


def test_snapshot_sections_validate_against_the_schema(box, cu118, generated, tmp_path):
    import json

    import jsonschema

    put(box, generated["debug"])
    snap = snapshot_of(box, CUDA_HOME=str(cu118), FLASHINFER_CUDA_ARCH_LIST="9.0")
    p = tmp_path / "snap.json"
    snap.save(str(p))
    doc = json.loads(p.read_text())
    import fidoctor

    schema = json.loads((Path(fidoctor.__file__).parent / "schema" /
                         "snapshot.schema.json").read_text())
    jsonschema.validate(doc, schema)
    assert doc["sections"]["toolchain"]["status"] == "ok" and "torch_abi" in doc["sections"]
    doc["sections"]["toolchain"]["data"]["archs"]["entries"] = [{"entry": "9.0", "arch": "sm90"}]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, schema)
