"""An interpreter that uid 65534 can run, for the tests that drop to an unprivileged user.

pyenv's Pythons live under /root (mode 0700) and load their libpython from there through
RUNPATH, so an unprivileged user cannot start them (``libpython3.13.so.1.0: cannot open
shared object file``). The test's own interpreter is used when 'nobody' can run it with
fidoctor's dependencies on PYTHONPATH, else the system's ``/usr/bin/python3``; with neither
the test is skipped, saying why.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys

import pytest


@functools.cache
def _runs_as_nobody(py: str) -> bool:
    env = {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "PATH": "/usr/bin:/bin"}
    try:
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", py,
                            "-c", "import click, psutil, elftools, fidoctor"],
                           env=env, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def nobody_python() -> str:
    for py in (sys.executable, "/usr/bin/python3"):
        if os.path.exists(py) and _runs_as_nobody(py):
            return py
    pytest.skip("no interpreter here that uid 65534 can run with fidoctor on PYTHONPATH "
                f"({sys.executable} loads its libpython from a dir only root can read)")
