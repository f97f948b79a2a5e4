"""QA of `fidoctor cache import` against hostile bundle files (real tar files, the real CLI, the
real cached target venv with FlashInfer as --python)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tarfile

import pytest
from warmup_helpers import target_venv

ARCH = ["--arch", "9.0a"]


def run_limited(args, env, limit_bytes: int) -> subprocess.CompletedProcess:
    """The real CLI with its address space capped (RLIMIT_AS), so a run that would allocate
    gigabytes fails inside the test instead of taking memory from the shared box."""
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))
    return subprocess.run([sys.executable, "-m", "fidoctor", *args], env=env, text=True,
                          capture_output=True, timeout=300, preexec_fn=cap)


@pytest.mark.parametrize("kind", [tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME])
def test_a_bundle_whose_first_header_declares_a_gigabyte_pax_record_is_refused_at_once(
        tmp_path, kind):
    """A tar whose first header is a pax (or GNU long-name) record of 1.5 GiB: tarfile reads
    such a record into memory whole, before any member check. The file here is sparse (no disk
    used); the same bytes zstd-compressed are 36 KB. Import must refuse it from the declared
    size, without reading it: exit 2, one line, within a 1 GiB address space."""
    size = 3 << 29
    ti = tarfile.TarInfo("././@PaxHeader" if kind == tarfile.XHDTYPE else "././@LongLink")
    ti.type, ti.size = kind, size
    bomb = tmp_path / "bomb.tar"
    with open(bomb, "wb") as f:
        f.write(ti.tobuf(format=tarfile.USTAR_FORMAT))
        f.truncate(512 + size + 1024)  # sparse zeros: the record, then the end blocks
    base = tmp_path / "base"
    base.mkdir()
    env = dict(os.environ, FLASHINFER_WORKSPACE_BASE=str(base),
               XDG_STATE_HOME=str(tmp_path / "state"), XDG_CACHE_HOME=str(tmp_path / "xc"))
    r = run_limited(["cache", "import", "--python", str(target_venv()), *ARCH, str(bomb)], env,
                    1 << 30)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "extended header of" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert "internal error" not in r.stderr
    assert list(base.rglob("*")) == [] or all(p.is_dir() for p in base.rglob("*"))
