"""Real targets and real hangs for the warmup tests and bench.

``target_venv()`` builds (once, cached by versions) a venv with CPU torch and
flashinfer-python, which is what ``fidoctor warmup`` compiles in. The pieces a
GPU-less box lacks are supplied as real-builds-on-cpu.md says: a gcc-built
stub ``libcuda.so`` (there is no driver here, and the link step needs
``-lcuda``), ``CUDA_HOME=/usr/local/cuda`` and the venv's bin first on PATH.

The hang helpers stand in for real failures that cannot be provoked on
demand: a CUDA_HOME whose ``bin/nvcc`` blocks forever (a hung nvcc), and a
real ``fcntl.flock`` held on a module's lock file by another process.
"""

from __future__ import annotations

import fcntl
import glob
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from proc_helpers import pid_alive

TORCH = "2.13.0"
FLASHINFER = "0.7.2.post1"
SMALL_DEPS = ["apache-tvm-ffi==0.1.15.post2", "ninja", "numpy", "packaging", "requests",
              "einops", "tqdm", "click", "tabulate", "nvidia-ml-py", "filelock"]
CUDA_HOME = "/usr/local/cuda"


def cache_root() -> Path:
    root = os.environ.get("FIDOCTOR_TEST_CACHE") or os.path.expanduser("~/.cache/fidoctor-test")
    p = Path(root)
    p.mkdir(parents=True, exist_ok=True)
    return p


def _locked(path: Path):
    f = open(path, "a+")  # noqa: SIM115 - returned, held by the caller
    fcntl.flock(f, fcntl.LOCK_EX)
    return f


def stub_libcuda() -> Path:
    """A gcc-built ``libcuda.so`` stub: no driver exists here, the link needs one."""
    d = cache_root() / "stubs"
    so = d / "libcuda.so"
    if so.exists():
        return d
    d.mkdir(parents=True, exist_ok=True)
    src = d / "stub.c"
    src.write_text("void cuGetErrorString(void){}\n")
    tmp = d / "libcuda.so.tmp"
    subprocess.run(["gcc", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", str(tmp),
                    str(src)], check=True)
    os.replace(tmp, so)
    return d


def target_python() -> str:
    """The interpreter the target venv is made from: ``FIDOCTOR_TEST_TARGET_PYTHON`` (CI runs
    the suite under several Pythons against one serving environment, whose CPU torch wheel
    fits one CPython), else the one running the tests."""
    return os.environ.get("FIDOCTOR_TEST_TARGET_PYTHON") or sys.executable


def target_venv(log=None) -> Path:
    """The interpreter of a cached venv with CPU torch + flashinfer (built on first use)."""
    base = target_python()
    if base == sys.executable:
        pyver = f"py{sys.version_info[0]}.{sys.version_info[1]}"
    else:
        pyver = "py" + subprocess.run(
            [base, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    venv = cache_root() / f"fi-target-{pyver}-torch{TORCH}-fi{FLASHINFER}"
    done = venv / ".fidoctor-complete"
    py = venv / "bin" / "python"
    if done.exists():
        return py
    with _locked(cache_root() / (venv.name + ".lock")):
        if done.exists():
            return py
        if venv.exists():
            shutil.rmtree(venv)
        out = log if log is not None else subprocess.DEVNULL
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
        pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run(pip + [f"torch=={TORCH}", *torch_index(py)], check=True, stdout=out,
                       stderr=out)
        subprocess.run(pip + ["--no-deps", f"flashinfer-python=={FLASHINFER}"], check=True,
                       stdout=out, stderr=out)
        subprocess.run(pip + SMALL_DEPS, check=True, stdout=out, stderr=out)
        subprocess.run([str(py), "-c", "import flashinfer"], check=True, stdout=out, stderr=out,
                       env=build_env(venv, Path("/nonexistent")))
        done.write_text(f"torch=={TORCH} flashinfer-python=={FLASHINFER}\n")
    return py


def torch_index(py: Path) -> List[str]:
    """Where CPU torch comes from: a wheel on disk if pip's find-links has one, else
    PyTorch's CPU index (PyPI's default torch wheel is the CUDA build, gigabytes of
    nvidia-* dependencies). ``FIDOCTOR_TORCH_INDEX`` overrides."""
    if os.environ.get("FIDOCTOR_TORCH_INDEX"):
        return ["--extra-index-url", os.environ["FIDOCTOR_TORCH_INDEX"]]
    cfg = subprocess.run([str(py), "-m", "pip", "config", "list"], capture_output=True,
                         text=True).stdout + " " + os.environ.get("PIP_FIND_LINKS", "")
    for d in re.findall(r"find-links='?([^'\s]+)", cfg) + os.environ.get(
            "PIP_FIND_LINKS", "").split():
        if glob.glob(os.path.join(d, f"torch-{TORCH}+cpu-*.whl")):
            return []
    return ["--extra-index-url", "https://download.pytorch.org/whl/cpu"]


def build_env(venv: Path, base: Path, cuda_home: str = CUDA_HOME,
              extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment a CPU box needs to build FlashInfer modules for sm_90a."""
    env = dict(os.environ)
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    env["FLASHINFER_WORKSPACE_BASE"] = str(base)
    env["FLASHINFER_CUDA_ARCH_LIST"] = "9.0a"
    env["CUDA_HOME"] = cuda_home
    env["FLASHINFER_EXTRA_LDFLAGS"] = f"-L{stub_libcuda()}"
    env["NO_COLOR"] = "1"
    env.pop("VIRTUAL_ENV", None)
    # fidoctor's journals (warmup's quarantine, --clear-incomplete) beside the test's own
    # workspace, never in the user's real ~/.local/state where `fidoctor undo` acts
    env["XDG_STATE_HOME"] = str(base.parent / f"{base.name}.state")
    env.update(extra or {})
    return env


def hung_toolkit(d: Path) -> Path:
    """A CUDA_HOME whose ``bin/nvcc`` blocks forever: it stands in for a hung nvcc.

    ``--version`` answers like the real one (FlashInfer parses it before it
    builds); any compile execs ``sleep`` so the compiler tree sits idle, as a
    nvcc stuck on a dead NFS read or a futex does. Headers and libs come from
    the real toolkit via symlinks.
    """
    (d / "bin").mkdir(parents=True, exist_ok=True)
    for name in os.listdir(CUDA_HOME):
        if name != "bin" and not (d / name).exists():
            os.symlink(os.path.join(CUDA_HOME, name), d / name)
    real = subprocess.run([f"{CUDA_HOME}/bin/nvcc", "--version"], capture_output=True,
                          text=True).stdout
    nvcc = d / "bin" / "nvcc"
    nvcc.write_text("#!/bin/sh\ncase \"$*\" in *--version*) cat <<'EOF'\n" + real +
                    "EOF\nexit 0;; esac\nexec sleep 100000\n")
    nvcc.chmod(0o755)
    return d


def hold_flock(lock_path: Path) -> subprocess.Popen:
    """Another process that takes a real ``fcntl.flock`` on ``lock_path`` and keeps it."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    code = ("import fcntl,sys,time\nf=open(sys.argv[1],'a')\nfcntl.flock(f,fcntl.LOCK_EX)\n"
            "print('held',flush=True)\ntime.sleep(100000)\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(lock_path)], stdout=subprocess.PIPE,
                         text=True, start_new_session=True)
    assert p.stdout is not None
    line = p.stdout.readline()
    assert line.strip() == "held", line
    return p


def alive(pids: List[int]) -> List[int]:
    """Those of ``pids`` that still exist and are not zombies."""
    return [pid for pid in pids if pid_alive(pid)]


def kill_and_wait(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, 9)
    except OSError:
        pass
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


if __name__ == "__main__":
    t = time.time()
    print(target_venv(log=None if "-q" in sys.argv else sys.stderr), f"{time.time() - t:.0f}s")
