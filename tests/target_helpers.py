"""Real interpreters to point ``--pid`` and ``--python`` at.

- ``conda_prefix``: a conda-style prefix built from this machine's CPython: its
  *own* copy of the python binary in ``bin/`` (as conda ships it, not a
  symlink), its own ``lib/pythonX.Y`` (the stdlib's entries linked in, a
  real ``site-packages``), ``conda-meta/history``, and no ``pyvenv.cfg``.
  Python finds its prefix from the binary's location, so ``sys.prefix`` is the
  prefix, exactly as in a conda env. (Conda itself is not installed here; the
  layout is what matters to fidoctor.)
- ``plain_venv``: ``python -m venv --without-pip``: ``bin/python`` a symlink.
- ``set_title``: setup code that does what ``setproctitle`` does.
- ``live``: start a real Python from a given argv/executable/cwd that prints
  ``ready`` once its setup code ran, and stays alive until killed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Dict, List, Optional

PYVER = f"python{sys.version_info[0]}.{sys.version_info[1]}"


def set_title(title: str) -> str:
    """Setup code that rewrites the process's own argv area, as ``setproctitle`` does
    (vLLM names its workers ``VLLM::EngineCore``, SGLang ``sglang::scheduler``)."""
    return f"""
raw = open('/proc/self/stat', 'rb').read()
rest = raw[raw.rindex(b')') + 2:].split()
start, end = int(rest[45]), int(rest[46])  # arg_start, arg_end (fields 48, 49)
buf = ({title.encode()!r} + bytes(end - start))[:end - start]
with open('/proc/self/mem', 'r+b', buffering=0) as mem:
    mem.seek(start)
    mem.write(buf)
"""


def base_python() -> Path:
    return Path(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))


def conda_prefix(root: Path) -> Path:
    prefix = root / "conda-env"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "conda-meta").mkdir()
    (prefix / "conda-meta" / "history").write_text("==> 2026-11-29 <==\n# fidoctor test prefix\n")
    exe = prefix / "bin" / PYVER
    shutil.copy2(base_python(), exe)
    for alias in ("python3", "python"):
        (prefix / "bin" / alias).symlink_to(PYVER)
    stdlib = Path(sysconfig.get_paths(vars={"base": sys.base_prefix,
                                            "installed_base": sys.base_prefix})["stdlib"])
    lib = prefix / "lib" / PYVER
    (lib / "site-packages").mkdir(parents=True)
    for entry in stdlib.iterdir():
        if entry.name not in ("site-packages", "dist-packages"):
            (lib / entry.name).symlink_to(entry)
    for so in Path(sys.base_prefix, "lib").glob("libpython*.so*"):
        (prefix / "lib" / so.name).symlink_to(so)
    out = subprocess.run([str(exe), "-c", "import sys; print(sys.prefix)"], capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.strip() == str(prefix), f"conda-style prefix not its own: {out}"
    return prefix


def plain_venv(root: Path, name: str = "venv", python: Optional[str] = None) -> Path:
    venv = root / name
    subprocess.run([python or sys.executable, "-m", "venv", "--without-pip", str(venv)],
                   check=True)
    return venv


def site_packages(prefix: Path) -> Path:
    return prefix / "lib" / PYVER / "site-packages"


def live(procs, argv: List[str], setup: str = "", executable: Optional[str] = None,
         cwd: Optional[Path] = None, env: Optional[Dict[str, str]] = None) -> subprocess.Popen:
    """A real live Python: runs ``setup``, prints ready, sleeps until killed (by ``procs``)."""
    code = f"{setup}\nimport sys, time\nprint('ready', flush=True)\ntime.sleep(3600)\n"
    p = subprocess.Popen([*argv, "-c", code], executable=executable, cwd=cwd, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    procs.popens.append(p)
    procs.remember(p.pid)
    line = p.stdout.readline()
    assert line.strip() == b"ready", (line, p.stderr.read(2000) if p.poll() is not None else "")
    return p


def misbehaving_python(path: Path, site_code: str, exec_: bool = True) -> Path:
    """A target interpreter that crashes, floods or hangs: a real CPython behind a wrapper
    (``path``, named like python, handing its arguments on with ``"$@"`` as a pyenv or asdf
    shim does) whose ``sitecustomize`` runs ``site_code`` before anything it is asked to
    run. Without ``exec_`` the shell stays as the Python's parent (two processes)."""
    site = path.parent / (path.name + "-site")
    site.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(site_code)
    path.write_text(f"#!/bin/sh\nPYTHONPATH={site} {'exec ' if exec_ else ''}"
                    f"{base_python()} \"$@\"\n")
    path.chmod(0o755)
    return path
