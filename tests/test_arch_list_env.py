"""``FLASHINFER_CUDA_ARCH_LIST`` as a hurried user writes it, judged by FlashInfer's own parser.

Real FlashInfer 0.7.2.post1 (the cached target venv, ``warmup_helpers.target_venv``): with
``9.0a;8.0`` (torch's separator), a set-but-empty value or two spaces, ``import flashinfer``
itself raises ValueError (``compilation_context.py`` splits on single spaces, each entry on
'.'). fidoctor split on ``;`` and any whitespace and ignored an empty value: it said nothing,
or (for ``garbage``) told the user to install a newer CUDA toolkit.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from conftest import run_cli
from warmup_helpers import build_env, target_venv

pytestmark = pytest.mark.timeout(600)


def _imports(py, env) -> subprocess.CompletedProcess:
    return subprocess.run([str(py), "-c", "import flashinfer"], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.mark.parametrize("value", ["9.0a;8.0", "", "9.0a  10.0a", "garbage"])
def test_an_arch_list_flashinfer_cannot_parse_is_named_with_the_only_fix(tmp_path, value):
    py = target_venv()
    env = build_env(py.parent.parent, tmp_path / "base", extra={})
    env["FLASHINFER_CUDA_ARCH_LIST"] = value
    if value != "garbage":  # the real import, once per separator mistake
        r = _imports(py, env)
        assert r.returncode != 0 and "ValueError" in r.stderr, r.stderr[-1000:]
    r = run_cli(["diagnose", "--json", "--python", str(py)], env=env, timeout=300)
    doc = json.loads(r.stdout)
    f = [x for x in doc["findings"] if x["id"] == "nvcc-arch-unsupported"]
    assert f and f[0]["data"].get("unparsable"), [x["id"] for x in doc["findings"]]
    assert "import flashinfer` raises ValueError" in f[0]["title"]
    fixes = " ".join(x["description"] for x in f[0]["fixes"])
    assert "Correct FLASHINFER_CUDA_ARCH_LIST" in fixes and "toolkit" not in fixes, fixes


def test_a_well_formed_arch_list_is_quiet(tmp_path):
    py = target_venv()
    env = build_env(py.parent.parent, tmp_path / "base", extra={})
    env["FLASHINFER_CUDA_ARCH_LIST"] = "9.0a 10.0a"
    r = _imports(py, env)
    assert r.returncode == 0, r.stderr[-1000:]
    r = run_cli(["diagnose", "--json", "--python", str(py)], env=env, timeout=300)
    doc = json.loads(r.stdout)
    assert not [x for x in doc["findings"] if x["id"] == "nvcc-arch-unsupported"
                and x["data"].get("unparsable")]


def test_an_ignored_torch_arch_list_is_not_called_absent(tmp_path):
    """``TORCH_CUDA_ARCH_LIST=9.0+PTX`` set (FlashInfer 0.2.6+ ignores it): the inconclusive
    line said there was no TORCH_CUDA_ARCH_LIST in the environment."""
    env = dict(os.environ, TORCH_CUDA_ARCH_LIST="9.0+PTX",
               FLASHINFER_WORKSPACE_BASE=str(tmp_path / "ws"))
    env.pop("FLASHINFER_CUDA_ARCH_LIST", None)
    doc = json.loads(run_cli(["diagnose", "--json"], env=env, timeout=120).stdout)
    why = [i["reason"] for i in doc["inconclusive"] if i["probe"] == "nvcc-arch-unsupported"]
    if not why:
        pytest.skip("nvcc-arch-unsupported was judged here (a GPU or a usable arch source)")
    assert "TORCH_CUDA_ARCH_LIST='9.0+PTX' is set, but FlashInfer 0.2.6+ ignores it" in why[0]
