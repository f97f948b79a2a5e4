"""Whose machine view the gatherers take: fidoctor's own, or a running server's.

With ``--pid`` the environment (FLASHINFER_WORKSPACE_BASE, HOME, CUDA_HOME,
LD_LIBRARY_PATH, PATH, MAX_JOBS, …) is read from ``/proc/PID/environ`` and the
interpreter is the one the process really runs (its venv's python: see
``interpreter.py``), so every gatherer sees what the hung server saw.
Without it, the target interpreter is ``--python``, else the active
venv/conda interpreter, else the one running fidoctor.
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Optional

from fidoctor.errors import FidoctorError
from fidoctor.procfs import PF_KTHREAD, parse_environ, read_stat

# Environment variables worth recording in a snapshot (by exact name or prefix).
# Anything else (tokens, keys) never enters the snapshot at all.
ENV_NAMES = {
    "PATH", "HOME", "USER", "LOGNAME", "MAX_JOBS", "VIRTUAL_ENV", "CONDA_PREFIX",
    "PYTHONPATH", "CC", "CXX", "TMPDIR", "XDG_CACHE_HOME", "XDG_STATE_HOME",
    "LD_LIBRARY_PATH", "LD_PRELOAD", "TORCH_CUDA_ARCH_LIST", "TORCH_EXTENSIONS_DIR",
    "PYTORCH_NVCC", "NVCC_PREPEND_FLAGS", "NVCC_APPEND_FLAGS",
}
ENV_PREFIXES = ("FLASHINFER_", "CUDA_", "NVIDIA_", "SGLANG_", "VLLM_")


def relevant_env(env: Dict[str, str]) -> Dict[str, str]:
    return {
        k: v for k, v in env.items() if k in ENV_NAMES or k.startswith(ENV_PREFIXES)
    }


@dataclass
class GatherContext:
    """Inputs of a gather run; stored (env filtered) in the snapshot's ``context``."""

    env: Dict[str, str]
    python: str
    python_source: str
    pid: Optional[int] = None
    deep: bool = False
    sample_window_s: float = 0.5
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def home(self) -> str:
        return self.env.get("HOME") or os.path.expanduser("~")

    @functools.cached_property
    def flashinfer_root(self) -> str:
        """``$FLASHINFER_WORKSPACE_BASE`` (else the home) ``/.cache/flashinfer`` as FlashInfer
        computes it in the target: an empty or relative base is under the server's cwd, no
        ``HOME`` is its uid's home (``fidoctor.flashinfer.layout.cache_root``)."""
        from fidoctor.flashinfer.layout import process_cache_root

        return process_cache_root(self.pid, self.env)

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["env"] = relevant_env(self.env)
        d["flashinfer_root"] = self.flashinfer_root
        return d


def _not_examinable(pid: int) -> Optional[str]:
    """Why ``pid`` has no environment to read (zombie, kernel thread), or None."""
    st = read_stat(pid)
    if st is None:
        return None
    if st["state"] == "Z":
        return (f"pid {pid} is a zombie: it has exited and only waits for its parent to "
                "collect it; there is nothing left to examine")
    if st["flags"] & PF_KTHREAD:
        return f"pid {pid} is a kernel thread, not a server process"
    return None


def read_proc_environ(pid: int) -> Dict[str, str]:
    path = f"/proc/{pid}/environ"
    why = _not_examinable(pid)
    if why:
        raise FidoctorError(why, "pass the pid of the running server (see: ps aux), or "
                            "--pid auto")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        raise FidoctorError(f"no process with pid {pid}", "check the pid with: ps aux") from None
    except PermissionError:
        raise FidoctorError(
            f"permission denied reading {path}",
            "run fidoctor as the user that owns the server process (or root)",
        ) from None
    env = parse_environ(raw)
    return env


def default_python(env: Dict[str, str]) -> tuple:
    """The interpreter a user most likely means: active venv, conda env, or ours."""
    from fidoctor import pyexe

    for var in ("VIRTUAL_ENV", "CONDA_PREFIX"):
        prefix = env.get(var)
        if prefix:
            names = [os.path.join(prefix, "bin", n) for n in ("python", "python3")]
            cand = next((c for c in names if os.path.exists(c)), None)
            cand = cand or next((c for c in names if os.path.lexists(c)), None)
            if cand:
                # An active venv whose interpreter is broken (its base Python removed) or is no
                # Python: diagnosing fidoctor's own interpreter instead would judge the wrong
                # patient without a word, and running it would run whatever it is.
                pyexe.check(cand, what=f"{var}={prefix}:")
                return cand, var
    return sys.executable, "fidoctor's own interpreter"


def _replaced_binary(pid: int, exe: str, deleted: bool, res: Any) -> None:
    """Say when the binary ``pid`` runs was deleted or replaced since it started (an upgrade,
    a reinstall): the file at that path now is not what the process runs, only what a restart
    would. Refuse to run it when it is no Python interpreter at all."""
    from fidoctor import pyexe

    if deleted:
        now = ("the file there now is what a restart would run, not what it runs"
               if os.path.lexists(res.python) else "nothing is there now")
        res.evidence.append(f"/proc/{pid}/exe: {exe} was deleted or replaced after the process "
                            f"started: {now}")
        res.how += " (its binary was replaced on disk since it started)"
    if os.path.lexists(res.python):
        why = pyexe.problem(res.python)
        if why:
            raise FidoctorError(
                f"pid {pid} runs {exe}{' (deleted since)' if deleted else ''}; the interpreter "
                f"to query, {res.python}, is {why}",
                "pass --python /path/to/serving-venv/bin/python (the interpreter a restart "
                "would run)")


def build_context(
    python: Optional[str] = None,
    pid: Optional[int] = None,
    deep: bool = False,
    env: Optional[Dict[str, str]] = None,
) -> GatherContext:
    if pid is not None:
        penv = read_proc_environ(pid)
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError as e:
            raise FidoctorError(
                f"cannot read /proc/{pid}/exe: {e.strerror}",
                "run fidoctor as the user that owns the server process (or root)",
            ) from None
        deleted = exe.endswith(" (deleted)")
        if deleted:
            exe = exe[: -len(" (deleted)")]
        from fidoctor.snapshot.interpreter import not_python, resolve_pid_python, same_mount_ns

        if same_mount_ns(pid) is False:
            raise FidoctorError(
                f"pid {pid} runs in another mount namespace (a container): the paths it sees "
                "are not the ones fidoctor sees, so nothing here would describe it",
                "run fidoctor inside that container (docker exec / kubectl exec … fidoctor "
                "diagnose --pid <its pid there>)")
        if python:
            from fidoctor import pyexe

            pyexe.check(python)  # run as `<python> -c <script>`: never a shell or a program
            return GatherContext(env=penv, python=python, python_source=f"--python (--pid {pid})",
                                 pid=pid, deep=deep)
        why = not_python(pid, exe)  # it would be run as `<exe> -c <script>`: never a shell
        if why:
            raise FidoctorError(why, "pass the server's pid (see: ps aux), --pid auto, or "
                                "--python /path/to/serving-venv/bin/python")
        res = resolve_pid_python(pid, penv, exe)
        _replaced_binary(pid, exe, deleted, res)
        return GatherContext(env=penv, python=res.python, python_source=f"--pid {pid}: {res.how}",
                             pid=pid, deep=deep, extra={"interpreter": res.to_dict()})
    env = dict(os.environ if env is None else env)
    if python:
        from fidoctor import pyexe

        pyexe.check(python)  # run as `<python> -c <script>`: never a shell or a program
        return GatherContext(env=env, python=python, python_source="--python", deep=deep)
    exe, source = default_python(env)
    return GatherContext(env=env, python=exe, python_source=source, deep=deep)
