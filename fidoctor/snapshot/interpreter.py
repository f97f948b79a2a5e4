"""Which interpreter a live process really runs: the venv's python, not the base binary.

Why: ``/proc/PID/exe`` of a server started as ``/srv/venv/bin/python`` is
``/usr/bin/python3.11`` — the venv's ``bin/python`` is a symlink, and the
kernel records where it points. Querying that base interpreter loses the
venv's site-packages, and torch, FlashInfer and the pip CUDA runtime look
absent. Python itself finds its venv from ``argv[0]`` and the ``pyvenv.cfg``
beside it, so we do the same, and trust the process's own memory first:

1. site-packages paths mapped in ``/proc/PID/maps`` (libtorch, FlashInfer
   modules, pip's libcudart) name the prefix whose packages are in use; a
   prefix counts only if its ``bin/python*`` *is* the running binary (same
   inode as ``/proc/PID/exe``), or the binary lives inside it (conda);
2. ``argv[0]`` resolved against the process's cwd and its own PATH
   (``setproctitle``, as vLLM and SGLang use, can make it useless — hence 1);
3. ``VIRTUAL_ENV`` / ``CONDA_PREFIX`` in its environment;
4. ``/proc/PID/exe`` itself.

What is mapped wins over what argv says. Every step tried is kept as
evidence, shown by ``diagnose`` and recorded in the snapshot's context.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from fidoctor.procfs import mapped_files, read_proc

_SITE = re.compile(r"^(.*?)/lib(?:64)?/python\d+(?:\.\d+)?t?/(?:site|dist)-packages/(.*)$")
_PY_NAMES = ("python", "python3")


@dataclass
class Resolved:
    python: str                # the interpreter to query: the venv's bin/python when a venv
    exe: str                   # /proc/PID/exe (the binary that runs)
    kind: str                  # "venv" | "conda" | "plain"
    how: str                   # one line, for the header and python_source
    prefix: Optional[str] = None
    evidence: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _ino(path: str) -> Optional[Tuple[int, int]]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def same_mount_ns(pid: int) -> Optional[bool]:
    """Does ``pid`` see the same files as we do? (None: cannot tell.)

    A server in a container has its own mount namespace: /opt/venv there is not
    /opt/venv here, and every path it maps or names would be judged on the wrong
    tree — the wrong patient, silently.
    """
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt") == os.readlink("/proc/self/ns/mnt")
    except OSError:
        return None


def read_cmdline(pid: int) -> List[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read(1 << 16)
    except OSError:
        return []
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0")[:-1]] if raw else []


def mapped_site_packages(pid: int) -> List[Tuple[str, str]]:
    """(prefix, file) for each distinct file under a site-packages dir mapped by ``pid``."""
    raw = read_proc(pid, "maps", -1)
    if raw is None:
        return []
    out: List[Tuple[str, str]] = []
    for path in mapped_files(raw.decode("utf-8", "replace")):
        m = _SITE.match(path)
        if m:
            out.append((m.group(1), path))
    return out


def env_kind(prefix: str) -> str:
    if os.path.isfile(os.path.join(prefix, "pyvenv.cfg")):
        return "venv"
    if os.path.isdir(os.path.join(prefix, "conda-meta")):
        return "conda"
    return "plain"


def python_in(prefix: str, exe: str) -> Optional[str]:
    """``prefix/bin/python*`` that is the running binary, or None if the prefix is not its own."""
    want = _ino(exe)
    bindir = os.path.join(prefix, "bin")
    names = list(_PY_NAMES)
    m = re.search(r"python\d+\.\d+t?$", os.path.basename(os.path.realpath(exe)))
    if m:
        names.append(m.group(0))
    inside = os.path.realpath(exe).startswith(os.path.realpath(prefix).rstrip("/") + "/")
    for n in names:
        cand = os.path.join(bindir, n)
        if want is not None and _ino(cand) == want:
            return cand
        if inside and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def resolve_argv0(argv0: str, cwd: Optional[str], env: Dict[str, str]) -> Optional[str]:
    """``argv[0]`` as the process's shell would have found it: against its cwd, or its PATH."""
    if not argv0:
        return None
    if "/" in argv0:
        path = argv0 if os.path.isabs(argv0) or not cwd else os.path.join(cwd, argv0)
        return os.path.normpath(path)
    found = shutil.which(argv0, path=env.get("PATH", ""))
    if found and not os.path.isabs(found) and cwd:
        found = os.path.join(cwd, found)
    return os.path.normpath(found) if found else None


def _venv_of(python: str) -> Optional[str]:
    prefix = os.path.dirname(os.path.dirname(python))
    return prefix if env_kind(prefix) != "plain" else None


def resolve_pid_python(pid: int, env: Dict[str, str], exe: str) -> Resolved:
    """The interpreter ``pid`` runs, judged from its maps, argv[0], environment and exe."""
    proc_exe = f"/proc/{pid}/exe"
    ev: List[str] = [f"/proc/{pid}/exe → {exe}"]
    exe_id = _ino(proc_exe) or _ino(exe)

    def same(path: str) -> bool:
        return exe_id is not None and _ino(path) == exe_id

    # 1. what is mapped
    counts: Dict[str, int] = {}
    sample: Dict[str, str] = {}
    for prefix, path in mapped_site_packages(pid):
        counts[prefix] = counts.get(prefix, 0) + 1
        if prefix not in sample or ("torch" in path or "flashinfer" in path) and not (
                "torch" in sample[prefix] or "flashinfer" in sample[prefix]):
            sample[prefix] = path
    for prefix in sorted(counts, key=lambda p: -counts[p]):
        shown = os.path.basename(sample[prefix])
        py = python_in(prefix, exe)
        if py is None:
            ev.append(f"maps: {counts[prefix]} file(s) under {prefix} (e.g. {shown}), but its "
                      "bin/python is not the running binary (PYTHONPATH or a .pth?)")
            continue
        kind = env_kind(prefix)
        ev.append(f"maps: {counts[prefix]} file(s) under {prefix}'s site-packages "
                  f"(e.g. {shown}) → {py}")
        return Resolved(py, exe, kind, f"{kind}, its site-packages mapped", prefix,
                        ev + _argv_note(pid, env, py, same))
    if not counts:
        ev.append(f"maps: no site-packages file mapped in /proc/{pid}/maps yet")
    # 2. argv[0]
    argv = read_cmdline(pid)
    try:
        cwd: Optional[str] = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        cwd = None
    cand = resolve_argv0(argv[0] if argv else "", cwd, env)
    if cand and same(cand):
        home = _venv_of(cand)
        ev.append(f"argv[0] {argv[0]!r} (cwd {cwd}, its PATH) → {cand}: the running binary"
                  + (f"; {os.path.join(home, 'pyvenv.cfg')}" if home and
                     env_kind(home) == "venv" else ""))
        if home:
            kind = env_kind(home)
            return Resolved(cand, exe, kind, f"{kind}, from argv[0]", home, ev)
        return Resolved(cand, exe, "plain", "from argv[0]", None, ev)
    ev.append(f"argv[0] {argv[0]!r}: " + (f"{cand} is not the running binary" if cand else
                                          "not found from its cwd/PATH") if argv else
              "argv[0]: unreadable")
    # 3. the environment it was started with
    for var in ("VIRTUAL_ENV", "CONDA_PREFIX"):
        declared = env.get(var)
        py = python_in(declared, exe) if declared else None
        if declared and py:
            ev.append(f"{var}={declared} → {py}")
            return Resolved(py, exe, env_kind(declared), f"from its {var}", declared, ev)
    # 4. the binary itself (a --copies venv or conda: its own prefix)
    own = _venv_of(exe)
    if own:
        return Resolved(exe, exe, env_kind(own), f"{env_kind(own)}, its own binary", own, ev)
    return Resolved(exe, exe, "plain", "its /proc/PID/exe", None, ev)


def _argv_note(pid: int, env: Dict[str, str], chosen: str, same) -> List[str]:
    argv = read_cmdline(pid)
    if not argv:
        return []
    try:
        cwd: Optional[str] = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        cwd = None
    cand = resolve_argv0(argv[0], cwd, env)
    if cand is None or not same(cand):
        return [f"argv[0] {argv[0]!r} does not name the running binary (setproctitle?)"]
    if os.path.dirname(os.path.dirname(cand)) != os.path.dirname(os.path.dirname(chosen)):
        return [f"argv[0] {argv[0]!r} → {cand} disagrees; what is mapped wins"]
    return [f"argv[0] {argv[0]!r} → {cand} agrees"]


def not_python(pid: int, exe: str) -> Optional[str]:
    """Why ``pid`` cannot be the target, when the binary it runs is no Python interpreter.

    Why: the target is queried by running it with ``-c <script>``; a shell run that way
    executes fidoctor's Python source as shell commands, with that process's PATH (its
    first line runs whatever ``import`` is found there). A wrapper's Python child is named.
    """
    from fidoctor.proctree import is_python_exe, tree_pids

    if is_python_exe(exe):
        return None
    below = []
    for p in tree_pids(pid)[1:]:
        if p == os.getpid():
            continue  # fidoctor itself, started from that shell: never the server
        try:
            if is_python_exe(os.readlink(f"/proc/{p}/exe")):
                below.append(p)
        except OSError:
            continue
    hint = (f" (a wrapper? the Python below it: {', '.join(f'--pid {p}' for p in below[:3])})"
            if below else "")
    return f"pid {pid} runs {exe}, not a Python interpreter: not a server{hint}"

