"""Is this file a Python interpreter? Judged from the file, without running it.

Why: fidoctor queries the target by running ``<python> -c <script>`` (and warmup by
``<python> <child.py> …``). Handed ``/bin/bash``, that runs fidoctor's Python source as
shell commands with the target's PATH; handed a console script (``/opt/venv/bin/vllm``,
``…/bin/pip``), its shebang's Python runs *that program* with our arguments — it starts
the server, or pip. So the file is judged first, by what it is:

- an ELF executable is a Python interpreter when its dynamic symbols show Python's own
  ``main``: it imports ``Py_BytesMain`` (3.8+), ``_Py_UnixMain`` (3.7) or ``Py_Main``
  (older) from a ``libpython`` it links (a shared build: pyenv, Fedora, a venv's copy), or
  it defines ``Py_BytesMain``/``Py_Main`` itself (a static libpython exported for
  extension modules: Debian, conda, python-build-standalone) and is named ``python…``;
  PyPy links ``libpypy*-c.so``. A program that merely embeds Python (gdb, vim) imports
  ``Py_Initialize`` but not Python's ``main``, and is refused;
- a ``#!`` script whose interpreter is Python is a *program*, not an interpreter: refused,
  naming the interpreter in its shebang (what ``--python`` should be);
- a ``#!`` shell script named ``python…`` that passes its arguments on (``"$@"``) is a
  wrapper such as a pyenv or asdf shim, and is accepted; any other script is refused;
- a link named ``python…`` to the binary of mise (rtx) or rye is their shim, and is accepted;
- Python 2 (a ``libpython2.*`` or a ``python2…`` name) is refused: no FlashInfer runs on it;
- an ELF for another CPU than fidoctor's own interpreter (an aarch64 venv copied to x86_64) is
  refused: the kernel cannot execute it;
- anything else — a directory, a FIFO, a device, an empty or non-executable file, a
  dangling symlink — is refused with what it is.

Not recognised (refused, and said so): a fully static interpreter with no dynamic symbol
table (a musl build), which cannot load torch's extension modules anyway.
"""

from __future__ import annotations

import functools
import os
import re
import stat
import sys
from typing import Optional

from fidoctor.errors import FidoctorError
from fidoctor.fsutil import file_kind, open_regular

HEAD = 4096
_MAINS = ("Py_BytesMain", "_Py_UnixMain", "Py_Main")
_PY_NAME = re.compile(r"^(?:python|pypy)(\d+(?:\.\d+)?t?)?(?:-dbg)?$")
# Version managers whose shims are one binary linked under each tool's name (mise, formerly
# rtx: ~/.local/share/mise/shims/python3 -> mise; rye: ~/.rye/shims/python).
_MULTIPLEXERS = ("mise", "rtx", "rye")
_SHELLS = ("sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "busybox")


def _name_is_python(path: str) -> bool:
    return bool(_PY_NAME.match(os.path.basename(path)))


def _python2(names) -> bool:
    return any(re.search(r"(?:^|/)(?:lib)?python2(?:\.\d+)?(?:\.so|$)", n) for n in names if n)


@functools.lru_cache(maxsize=1)
def _own_machine() -> Optional[str]:
    """The ELF machine of fidoctor's own interpreter (what this kernel runs), or None."""
    from fidoctor.elf import ElfError, read_facts

    try:
        return read_facts(os.path.realpath(sys.executable), prefixes=()).get("machine")
    except (ElfError, OSError):
        return None


def _elf_problem(path: str, real: str) -> Optional[str]:
    from fidoctor.elf import ElfError, read_facts

    try:
        facts = read_facts(real, prefixes=(b"Py_", b"_Py_UnixMain"))
    except ElfError as e:
        return f"an ELF file fidoctor cannot read ({e}), not a Python interpreter"
    mine = _own_machine()
    if mine and facts.get("machine") != mine and not (mine == "EM_X86_64"
                                                      and facts.get("machine") == "EM_386"):
        return (f"a program for another CPU ({facts.get('machine')}; this machine runs "
                f"{mine}): it cannot run here")
    needed = [n for n in facts.get("needed") or [] if isinstance(n, str)]
    imports = {u[0] for u in facts.get("undefined") or [] if u}
    exports = set(facts.get("exports") or {})
    if _python2([*needed, path, real]):
        return "a Python 2 interpreter: FlashInfer and torch need Python 3"
    if imports & set(_MAINS):
        return None
    if exports & set(_MAINS) and (_name_is_python(path) or _name_is_python(real)):
        return None
    if any(n.startswith("libpypy") for n in needed):
        return None
    if _name_is_python(path) and os.path.basename(real) in _MULTIPLEXERS:
        return None  # mise's/rye's shim: their binary, named python, runs the chosen Python
    embeds = [n for n in needed if n.startswith("libpython")]
    if embeds:
        return (f"a program that embeds Python ({embeds[0]}) but does not run Python's own "
                "main, not a Python interpreter")
    return "an executable that is no Python interpreter (no libpython, no Py_BytesMain)"


def _script_problem(path: str, real: str, head: bytes) -> Optional[str]:
    line = head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    words = line.split()
    if not words:
        return "a script with an empty #! line, not a Python interpreter"
    interp = words[0]
    if os.path.basename(interp) == "env":
        rest = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
        interp = rest[0] if rest else ""
    prog = os.path.basename(interp)
    if _name_is_python(prog):
        return (f"a Python script (#!{line}), not an interpreter: fidoctor would run the "
                f"script itself; pass the interpreter it names (--python {interp})")
    if prog in _SHELLS and (_name_is_python(path) or _name_is_python(real)):
        if b'"$@"' in head or b"${@}" in head or b'"${@}"' in head:
            return None  # a wrapper that hands its arguments to Python (pyenv, asdf shims)
        return (f"a shell script (#!{line}) named like Python that does not pass its "
                "arguments on (\"$@\"), not a Python interpreter")
    return f"a script (#!{line}), not a Python interpreter"


def problem(path: str) -> Optional[str]:
    """Why ``path`` cannot be queried as a Python interpreter (one line), or None."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return (f"a dangling symlink (to {os.path.realpath(path)}: removed, or a venv "
                    "whose base Python is gone)")
        if os.sep not in path:
            import shutil

            found = shutil.which(path)
            if found:  # `--python python3`: a name, read as a file here, not looked up
                return (f"no such file in the current directory (--python takes a path; "
                        f"on PATH that name is {os.path.abspath(found)}: pass that)")
        if path.strip() != path and os.path.exists(path.strip()):  # a pasted space or newline
            return f"no such file ({path.strip()!r} exists: the path has whitespace around it)"
        return "no such file"
    except OSError as e:
        return f"cannot be examined ({e.strerror or e})"
    if stat.S_ISDIR(st.st_mode):
        for sub in ("bin/python", "bin/python3"):
            if os.path.exists(os.path.join(path, sub)):
                return f"a directory (its interpreter: {os.path.join(path, sub)})"
        return "a directory, not an interpreter"
    if not stat.S_ISREG(st.st_mode):
        return f"a {file_kind(st.st_mode)}, not an interpreter"
    if not os.access(path, os.X_OK):
        try:
            noexec = bool(os.statvfs(path).f_flag & os.ST_NOEXEC)
        except OSError:
            noexec = False
        if noexec and st.st_mode & 0o111:
            return "on a file system mounted noexec: the kernel refuses to run anything there"
        return f"not executable (mode {stat.S_IMODE(st.st_mode):o})"
    if st.st_size == 0:
        return "an empty file"
    real = os.path.realpath(path)
    try:
        with open_regular(path) as f:
            head = f.read(HEAD)
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    if head[:4] == b"\x7fELF":
        return _elf_problem(path, real)
    if head[:2] == b"#!":
        return _script_problem(path, real, head)
    return "neither an executable program nor a script with #!"


def check(path: str, what: str = "--python", hint: str = "") -> None:
    """Raise a FidoctorError (exit 2) when ``path`` is not a Python interpreter (see above)."""
    why = problem(path)
    if why:
        raise FidoctorError(f"{what} {path}: {why}",
                            hint or "pass the serving environment's interpreter, e.g. "
                            "/opt/venv/bin/python (or --pid <server pid>)")
