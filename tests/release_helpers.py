"""Real FlashInfer releases from PyPI, each in its own small venv, for the version matrix.

Every release is downloaded once (``pip download --no-deps``) into
``<test cache>/fi-releases`` and installed once into ``<test cache>/fi-release-<ver>``, under a
lock file, so concurrent tests and CI reuse them. The venvs do not install torch: a ``.pth``
file points at ``<test cache>/cpu-torch-site``, a directory of links to the CPU torch (and its
small dependencies: filelock, ninja, numpy, nvidia-ml-py, setuptools …) of the shared target
venv (warmup_helpers.target_venv), leaving that venv's flashinfer and tvm-ffi out. That keeps
each release venv to the size of its sdist or wheel.

How each family installs (the issue's recipe):
- 0.2.x–0.3.x are sdists: ``--no-deps --no-build-isolation`` (with ``wheel`` in the venv);
- 0.4.1 pins ``apache-tvm-ffi==0.1.0b15``, which PyPI no longer serves: installed
  ``--no-deps`` with ``apache-tvm-ffi==0.1.0`` instead;
- 0.4+ are wheels (``--no-deps`` plus tvm-ffi).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from warmup_helpers import _locked, cache_root, target_venv

SDIST = ("0.2.", "0.3.")
TVM_FFI = {"0.4.1": "apache-tvm-ffi==0.1.0"}
TVM_FFI_DEFAULT = "apache-tvm-ffi==0.1.15.post2"
LEFT_OUT = ("flashinfer", "tvm_ffi", "apache_tvm_ffi", "__pycache__", "_distutils_hack")


def torch_site() -> Path:
    """Links to the target venv's CPU torch and friends, without its FlashInfer."""
    py = Path(target_venv())
    site = Path(subprocess.run([str(py), "-c", "import torch, os; "
                                "print(os.path.dirname(os.path.dirname(torch.__file__)))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    d = cache_root() / f"cpu-torch-site-{py.parent.parent.name}"
    done = d / ".fidoctor-complete"
    if done.exists():
        return d
    with _locked(cache_root() / (d.name + ".lock")):
        if done.exists():
            return d
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        for e in sorted(site.iterdir()):
            if e.name.startswith(LEFT_OUT) or e.suffix == ".pth":
                continue
            (d / e.name).symlink_to(e)
        done.write_text("ok\n")
    return d


def release_python(version: str) -> Path:
    """The interpreter of a venv holding the real flashinfer-python ``version`` from PyPI."""
    venv = cache_root() / f"fi-release-{version}"
    py = venv / "bin" / "python"
    done = venv / ".fidoctor-complete"
    if done.exists():
        return py
    site_dir = torch_site()
    base = Path(target_venv()).resolve()
    with _locked(cache_root() / (venv.name + ".lock")):
        if done.exists():
            return py
        shutil.rmtree(venv, ignore_errors=True)
        dl = cache_root() / "fi-releases"
        dl.mkdir(parents=True, exist_ok=True)
        with _locked(cache_root() / "fi-releases.lock"):
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                            "--disable-pip-version-check", "-d", str(dl),
                            f"flashinfer-python=={version}"], check=True)
        files = [f for f in dl.iterdir() if f.name.startswith(f"flashinfer_python-{version}")
                 and f.name[len(f"flashinfer_python-{version}")] in ".-"]
        assert files, f"pip download left no flashinfer-python {version} in {dl}"
        subprocess.run([str(base), "-m", "venv", str(venv)], check=True)
        sp = Path(subprocess.run([str(py), "-c", "import sysconfig; "
                                  "print(sysconfig.get_paths()['purelib'])"],
                                 capture_output=True, text=True, check=True).stdout.strip())
        (sp / "cpu_torch.pth").write_text(f"{site_dir}\n")
        pip = [str(py), "-m", "pip", "install", "-q",
               "--disable-pip-version-check", "--no-deps"]
        env = dict(os.environ, PIP_NO_INPUT="1")
        if version.startswith(SDIST):
            subprocess.run(pip + ["wheel", "setuptools>=77"], check=True, env=env)
            subprocess.run(pip + ["--no-build-isolation", str(files[0])], check=True, env=env,
                           cwd=str(venv))
        else:
            subprocess.run(pip + [str(files[0]), TVM_FFI.get(version, TVM_FFI_DEFAULT)],
                           check=True, env=env)
        done.write_text("ok\n")
    return py
