"""The ``gpu`` gatherer: GPUs, driver, the CUDA version the driver supports, libcuda.

This box has no NVIDIA driver, so the parsers read output captured verbatim on the
H200 machine (``tests/fixtures/real-h200``), and the absence path runs for real.
Where a driver part must *run* (nvidia-smi, libcuda's ``cuDriverGetVersion``) the
stand-ins are said so in each test: a shell script that prints the captured output,
and a gcc-built ``libcuda.so.1`` exporting ``cuDriverGetVersion``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import pytest

from fidoctor.diagnosis import diagnose
from fidoctor.render.style import Styler
from fidoctor.render.text import render
from fidoctor.report.versions import rows
from fidoctor.snapshot.context import build_context
from fidoctor.snapshot.gather import gpu
from fidoctor.snapshot.runner import gather_snapshot

H200 = Path(__file__).parent / "fixtures" / "real-h200"
NO_DRIVER = not os.path.exists("/proc/driver/nvidia")


def _ctx(env, pid=None):
    return SimpleNamespace(env=env, pid=pid)


def _smi_script(d: Path, body: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    p = d / "nvidia-smi"
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(0o755)
    return d


def fake_smi(d: Path) -> Path:
    """A stand-in nvidia-smi (no driver here) that prints what the real one printed on the H200."""
    q, banner = H200 / "nvidia-smi-query.csv", H200 / "nvidia-smi.txt"
    return _smi_script(d, f'case "$1" in --query-gpu=*) cat {q};; *) cat {banner};; esac\n')


def stub_libcuda(d: Path, version: str, cuda: int) -> Path:
    """A gcc-built libcuda (stand-in: no driver here) named like the driver's real file."""
    d.mkdir(parents=True, exist_ok=True)
    src = d / "cuda.c"
    src.write_text(f"int cuDriverGetVersion(int *v) {{ *v = {cuda}; return 0; }}\n")
    real = d / f"libcuda.so.{version}"
    subprocess.run(["gcc", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", str(real),
                    str(src)], check=True)
    (d / "libcuda.so.1").symlink_to(real.name)
    return d


# ---- parsers over real captured output -------------------------------------------------

def test_smi_query_of_the_h200():
    gpus, driver = gpu.parse_smi_csv((H200 / "nvidia-smi-query.csv").read_text())
    assert driver == "580.159.04"
    assert [(g["name"], g["compute_cap"], g["sm"], g["memory_total_mib"]) for g in gpus] == \
        [("NVIDIA H200", "9.0", "90", 143771)]
    assert gpus[0]["pci_bus_id"] == "00000000:00:06.0"


def test_smi_query_rejects_what_is_not_a_gpu_line():
    text = "Field \"compute_cap\" is not a valid field to query.\n\n"
    assert gpu.parse_smi_csv(text) == ([], None)
    gpus, _ = gpu.parse_smi_csv("0, Tesla T4, [N/A], 470.57.02, 00000000:00:04.0, 15109\n")
    assert gpus[0]["compute_cap"] is None and gpus[0]["sm"] is None


def test_smi_banner_gives_the_drivers_cuda_version():
    assert gpu.parse_smi_banner((H200 / "nvidia-smi.txt").read_text()) == \
        {"driver_version": "580.159.04", "cuda_version": "13.0"}
    assert gpu.parse_smi_banner("NVIDIA-SMI has failed because it couldn't communicate") == {}


def test_proc_driver_version_and_gpu_information():
    assert gpu.parse_proc_version((H200 / "proc_driver_nvidia_version.txt").read_text()) == \
        "580.159.04"
    assert gpu.parse_proc_version("garbage") is None
    assert gpu.parse_gpu_information((H200 / "gpu_information.txt").read_text()) == \
        {"name": "NVIDIA H200", "pci_bus_id": "0000:00:06.0"}


def test_versions_from_numbers_and_file_names():
    assert gpu.cuda_version_from_int(13000) == "13.0"
    assert gpu.cuda_version_from_int(12040) == "12.4"
    assert gpu.libcuda_version("/usr/local/nvidia/lib64/libcuda.so.580.159.04") == "580.159.04"
    assert gpu.libcuda_version("/lib/libcuda.so.1") is None  # a SONAME says nothing


# ---- the gatherer, for real ------------------------------------------------------------

@pytest.mark.skipif(not NO_DRIVER, reason="this machine has an NVIDIA driver")
def test_no_driver_is_a_fact_with_reasons(tmp_path):
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path)}
    data = gpu.gather(_ctx(env), {})
    assert data["present"] is False and data["gpus"] == []
    assert data["driver_version"] is None and data["cuda_driver_version"] is None
    reasons = " | ".join(data["absent_reasons"])
    assert "nvidia-smi: not found" in reasons and "/proc/driver/nvidia/version" in reasons
    assert "libcuda.so.1: not found" in reasons
    assert data["nvidia_smi"]["ran"] is False


def test_smi_found_on_the_targets_path(tmp_path):
    d = fake_smi(tmp_path / "bin")
    data = gpu.gather(_ctx({"PATH": f"{d}:/usr/bin:/bin"}), {})
    assert data["present"] is True
    assert data["nvidia_smi"]["path"] == str(d / "nvidia-smi") and data["nvidia_smi"]["ok"]
    assert [g["name"] for g in data["gpus"]] == ["NVIDIA H200"]
    assert data["driver_version"] == "580.159.04" and data["driver_version_source"] == "nvidia-smi"
    if NO_DRIVER:  # no libcuda to ask: the banner answers
        assert data["cuda_driver_version"] == "13.0"
        assert data["cuda_driver_version_source"] == "nvidia-smi"


def test_a_hung_nvidia_smi_is_a_timeout_not_a_hang(tmp_path, procs, monkeypatch):
    """A stand-in nvidia-smi that never answers (as on a wedged driver)."""
    d = _smi_script(tmp_path / "bin", "exec sleep 600\n")
    monkeypatch.setattr(gpu, "SMI_TIMEOUT_S", 0.5)
    data = gpu.gather(_ctx({"PATH": f"{d}:/usr/bin:/bin"}), {})
    assert data["nvidia_smi"]["timed_out"] is True
    assert any("timed out" in r for r in data["absent_reasons"])


def test_libcuda_on_ld_library_path_is_read_and_asked(tmp_path):
    lib = stub_libcuda(tmp_path / "drv", "550.54.14", 12040)
    facts = gpu.find_libcuda({"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": str(lib)})
    assert facts["path"] == str(lib / "libcuda.so.1") and facts["via"] == "LD_LIBRARY_PATH"
    assert facts["realpath"] == str(lib / "libcuda.so.550.54.14")
    assert facts["version"] == "550.54.14"
    assert facts["cuda_version"] == "12.4"
    assert "cuDriverGetVersion() = 12040" in facts["cuda_version_result"]


def test_a_library_without_the_entry_point_is_recorded(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "c.c").write_text("int unrelated(void) { return 0; }\n")
    so = d / "libcuda.so.1"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(so), str(d / "c.c")], check=True)
    version, result = gpu.ask_driver(str(so))
    assert version is None and "cuDriverGetVersion" in result


def test_with_pid_what_is_mapped_wins(tmp_path, procs):
    """A live process that dlopens one libcuda while LD_LIBRARY_PATH points at another."""
    mapped = stub_libcuda(tmp_path / "mapped", "535.104.05", 12020)
    other = stub_libcuda(tmp_path / "other", "580.159.04", 13000)
    p = procs.start([sys.executable, "-c",
                     f"import ctypes, sys, time; ctypes.CDLL({str(mapped / 'libcuda.so.1')!r}); "
                     "print('ready', flush=True); time.sleep(600)"], stdout=subprocess.PIPE)
    assert p.stdout.readline().strip() == b"ready"
    facts = gpu.find_libcuda({"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": str(other)}, pid=p.pid)
    assert facts["via"] == f"/proc/{p.pid}/maps"
    assert facts["version"] == "535.104.05" and facts["cuda_version"] == "12.2"


def test_diagnose_shows_gpu_facts_in_header_json_and_version_table(tmp_path):
    d = fake_smi(tmp_path / "bin")
    lib = stub_libcuda(tmp_path / "drv", "580.159.04", 13000)
    env = dict(os.environ, PATH=f"{d}:{os.environ['PATH']}", LD_LIBRARY_PATH=str(lib),
               FLASHINFER_WORKSPACE_BASE=str(tmp_path / "ws"))
    snap = gather_snapshot(build_context(python=sys.executable, env=env),
                           only=["target", "gpu", "host_compiler"], inline=True)
    diag = diagnose(snap)
    doc = diag.to_json()
    schema = json.loads((Path(gpu.__file__).parents[2] / "schema" / "diagnose.schema.json")
                        .read_text())
    jsonschema.validate(doc, schema)
    g = doc["target"]["gpu"]
    assert g["gpus"] == [{"name": "NVIDIA H200", "compute_cap": "9.0"}]
    assert (g["driver_version"], g["cuda_driver_version"]) == ("580.159.04", "13.0")
    text = render(diag, Styler(False))
    assert "gpu:    1 × NVIDIA H200 (sm 9.0) · driver 580.159.04 (CUDA 13.0)" in text
    table = {r[0]: r for r in rows(snap)}
    assert table["NVIDIA driver"][1:] == ("580.159.04", "supports CUDA 13.0")
    assert table["GPU"][1:] == ("1 × NVIDIA H200", "compute capability 9.0")


@pytest.mark.skipif(not NO_DRIVER, reason="this machine has an NVIDIA driver")
def test_version_table_says_no_driver(tmp_path):
    env = dict(os.environ, PATH="/usr/bin:/bin", LD_LIBRARY_PATH="")
    snap = gather_snapshot(build_context(python=sys.executable, env=env), only=["gpu"],
                           inline=True)
    table = {r[0]: r for r in rows(snap)}
    assert table["NVIDIA driver"][1] is None and "none: nvidia-smi" in table["NVIDIA driver"][2]


def test_an_old_driver_without_compute_cap_still_names_the_gpus(tmp_path):
    """A stand-in nvidia-smi that refuses compute_cap as a pre-510 driver's does (its message
    verbatim), and answers the query without it."""
    d = _smi_script(tmp_path / "bin", 'case "$1" in\n'
                    '  *compute_cap*) echo \'Field "compute_cap" is not a valid field to query.\'; '
                    'exit 2;;\n'
                    '  --query-gpu=*) echo "0, Tesla T4, 0, 470.57.02, 00000000:00:04.0, 15109";;\n'
                    'esac\n')
    data = gpu.gather(_ctx({"PATH": f"{d}:/usr/bin:/bin"}), {})
    assert [(g["name"], g["compute_cap"]) for g in data["gpus"]] == [("Tesla T4", None)]
    assert data["driver_version"] == "470.57.02"
