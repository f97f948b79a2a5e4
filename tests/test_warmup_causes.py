"""warmup names the cause of a failed build: a real nvcc build into a real full TMPDIR.

The target is the cached venv (FlashInfer 0.7.2.post1, CPU torch); TMPDIR is a
real 1 MB tmpfs filled to the last byte, so nvcc's first ``tmpxft_*`` write
fails with ``No space left on device``. warmup's ``warmup-build-failed``
verdict must then say ``caused_by: disk-space-low``, not just the compiler's
last line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources

import jsonschema
import pytest
from fs_helpers import fill, tmpfs
from warmup_helpers import build_env, target_venv

pytestmark = pytest.mark.slow


def test_build_failed_on_a_full_tmpdir_names_disk_space_low(tmp_path):
    py = target_venv()
    tmp = tmp_path / "tmpdir"
    base = tmp_path / "base"
    base.mkdir()
    with tmpfs(tmp, "1m"):
        fill(tmp, leave_bytes=0)
        env = build_env(py.parent.parent, base, extra={"TMPDIR": str(tmp),
                                                       "XDG_STATE_HOME": str(tmp_path / "st")})
        r = subprocess.run([sys.executable, "-m", "fidoctor", "warmup", "--python", str(py),
                            "--arch", "9.0a", "--modules", "single-decode:f16:64", "--json"],
                           env=env, capture_output=True, text=True, timeout=300)
    doc = json.loads(r.stdout)
    schema = json.loads(resources.files("fidoctor").joinpath("schema/warmup.schema.json")
                        .read_text())
    jsonschema.validate(doc, schema)
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    [f] = [f for f in doc["findings"] if f["id"] == "warmup-build-failed"]
    assert f["caused_by"] == "disk-space-low", f
    assert any(e.startswith("caused by disk-space-low") for e in f["evidence"])
    assert f["fixes"][0]["commands"][0].startswith("export TMPDIR=")  # the cause's advice
    assert any(n.startswith("cause: disk-space-low") for n in doc["notes"])
