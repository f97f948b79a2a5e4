"""Real compiled FlashInfer modules, built once per machine, for the cache bundle tests.

``compiled_base(specs)`` runs the real ``fidoctor warmup --arch 9.0a`` in the
cached target venv (warmup_helpers.target_venv: CPU torch + flashinfer-python)
into a workspace base under $FIDOCTOR_TEST_CACHE, once per spec set (a real
nvcc 13 compile, ~30-50 s per decode module on this box), guarded by a lock
file so concurrent sessions build it once. The result is never written to
again: tests read it (export is read-only) or copy it.

``second_target(root)`` is the import side: a second venv whose own
site-packages gets a real ``pip install --force-reinstall --no-deps
flashinfer-python`` (fresh files, newer mtimes, another path) and which
reaches torch and the rest through a ``.pth`` line into the first venv; and a
CUDA_HOME that is another symlink to the same toolkit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Sequence

from warmup_helpers import CUDA_HOME, FLASHINFER, _locked, build_env, cache_root, target_venv

SMALL = ("single-decode:f16:64",)


def compiled_base(specs: Sequence[str] = SMALL) -> Path:
    """A FLASHINFER_WORKSPACE_BASE holding real modules for ``specs`` (built once)."""
    py = target_venv()
    key = "+".join(s.replace(":", "_") for s in specs)
    base = cache_root() / f"fi-built-{FLASHINFER}-{key}"
    done = base / ".fidoctor-complete"
    if done.exists():
        return base
    with _locked(cache_root() / (base.name + ".lock")):
        if done.exists():
            return base
        if base.exists():
            shutil.rmtree(base)
        base.mkdir(parents=True)
        env = build_env(py.parent.parent, base,
                        extra={"XDG_STATE_HOME": str(base / ".state")})
        r = subprocess.run([sys.executable, "-m", "fidoctor", "warmup", "--python", str(py),
                            "--arch", "9.0a", "--modules", ",".join(specs)], env=env,
                           capture_output=True, text=True, timeout=1800)
        if r.returncode != 0:
            raise RuntimeError(f"warmup failed: {r.stdout[-2000:]}\n{r.stderr[-2000:]}")
        done.write_text(",".join(specs) + "\n")
    return base


def workspace_of(base: Path) -> Path:
    return base / ".cache" / "flashinfer" / FLASHINFER / "90a"


def second_target(root: Path) -> Dict[str, Path]:
    """Another venv (another path) with a freshly pip-installed flashinfer, and another
    CUDA_HOME spelling (a symlink to the same toolkit)."""
    first = target_venv()
    venv = root / "venv2"
    subprocess.run([str(first), "-m", "venv", "--without-pip", str(venv)], check=True)
    # the target venv's Python (FIDOCTOR_TEST_TARGET_PYTHON), not necessarily the tests' own
    first_site = next((first.parent.parent / "lib").glob("python3.*")) / "site-packages"
    site = venv / "lib" / first_site.parent.name / "site-packages"
    # torch, tvm_ffi, ninja… come from the first venv; flashinfer from our own site-packages,
    # which comes first on sys.path.
    (site / "zz-first-venv.pth").write_text(str(first_site) + "\n")
    r = subprocess.run([str(first), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        "--force-reinstall", "--no-deps", "--target", str(site),
                        f"flashinfer-python=={FLASHINFER}"], capture_output=True, text=True,
                       timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"pip install failed: {r.stderr[-2000:]}")
    for name in ("ninja",):  # FlashInfer runs the ninja on PATH: the first venv's
        os.symlink(first.parent / name, venv / "bin" / name)
    link = root / "cuda-link"
    os.symlink(os.path.realpath(CUDA_HOME), link)
    return {"python": venv / "bin" / "python", "venv": venv, "site": site, "cuda_home": link}


def target_env(t: Dict[str, Path], base: Path, **extra: str) -> Dict[str, str]:
    env = build_env(t["venv"], base, cuda_home=str(t["cuda_home"]), extra=extra)
    return env
