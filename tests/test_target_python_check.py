"""``--python`` (and an active venv) must name a Python interpreter, judged before it is run.

The target is queried as ``<python> -c <fidoctor's script>``: ``--python /bin/bash`` ran the
script as shell, whose first line runs the ``import`` found on PATH (ImageMagick's, or here a
real script that leaves a marker); a console script (``…/bin/pip``, ``…/bin/vllm``) ran that
program. Each case here is a real file: the real bash, pyenv's pip script, a FIFO, a
directory, a dangling symlink, a venv whose base Python was deleted, pyenv's Python 2.7 and
gdb (a program embedding libpython) where this machine has them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli
from target_helpers import base_python

from fidoctor import pyexe

PYENV = Path("/root/.pyenv/versions")


def _trap(tmp_path):
    """A PATH whose ``import`` leaves a marker: what ``bash -c <script>`` would run."""
    fake = tmp_path / "fakebin"
    fake.mkdir()
    marker = tmp_path / "IMPORT_RAN"
    (fake / "import").write_text(f"#!/bin/sh\necho \"$*\" >> {marker}\n")
    (fake / "import").chmod(0o755)
    return dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}",
                FLASHINFER_WORKSPACE_BASE=str(tmp_path / "ws")), marker


def _refused(r, *words):
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    first = r.stderr.splitlines()[0]
    assert first.startswith("fidoctor: error: "), r.stderr
    for w in words:
        assert w in first, r.stderr


@pytest.mark.parametrize("cmd", [["diagnose"], ["snapshot", "-o", "{tmp}/s.json"],
                                 ["report", "-o", "{tmp}/r.md"], ["cache", "verify"],
                                 ["warmup", "--plan", "--arch", "9.0a"],
                                 ["warmup", "--check"], ["fix", "--dry-run"]])
def test_bash_as_python_is_refused_and_never_run(tmp_path, cmd):
    env, marker = _trap(tmp_path)
    args = [a.replace("{tmp}", str(tmp_path)) for a in cmd] + ["--python", "/bin/bash"]
    r = run_cli(args, env=env, timeout=60)
    _refused(r, "/bin/bash", "no Python interpreter")
    assert not marker.exists(), marker.read_text()


def test_a_console_script_is_refused_naming_its_interpreter(tmp_path):
    """pip's script: ``#!…/python3.X`` then pip's main; run with ``-c <script>`` it is pip."""
    script = tmp_path / "vllm"
    script.write_text(f"#!{base_python()}\nimport sys\nopen({str(tmp_path / 'RAN')!r}, 'w')\n")
    script.chmod(0o755)
    env, marker = _trap(tmp_path)
    r = run_cli(["diagnose", "--python", str(script)], env=env, timeout=60)
    _refused(r, "a Python script", f"--python {base_python()}")
    assert not (tmp_path / "RAN").exists()
    env_form = tmp_path / "serve"
    env_form.write_text("#!/usr/bin/env python3\nprint('serving')\n")
    env_form.chmod(0o755)
    _refused(run_cli(["diagnose", "--python", str(env_form)], env=env, timeout=60),
             "a Python script", "--python python3")


def test_files_that_are_no_program_are_refused_with_what_they_are(tmp_path):
    env, _ = _trap(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    empty.chmod(0o755)
    noexec = tmp_path / "python3"
    shutil.copy(base_python(), noexec)
    noexec.chmod(0o644)
    dangling = tmp_path / "python"
    dangling.symlink_to(tmp_path / "gone" / "python3.11")
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / "bin").mkdir()
    (venv / "bin" / "python").symlink_to(base_python())
    text = tmp_path / "notes"
    text.write_text("just text\n")
    text.chmod(0o755)
    shell = tmp_path / "start.sh"
    shell.write_text("#!/bin/sh\nexec python3 -m sglang.launch_server \"$@\"\n")
    shell.chmod(0o755)
    cases = [(fifo, "a fifo"), (empty, "an empty file"), (noexec, "not executable"),
             (dangling, "a dangling symlink"), (tmp_path, "a directory"),
             (venv, f"its interpreter: {venv}/bin/python"), (text, "neither an executable"),
             (shell, "a script (#!/bin/sh)")]
    for path, words in cases:
        _refused(run_cli(["diagnose", "--python", str(path)], env=env, timeout=60), words)


def test_a_venv_whose_base_python_was_deleted(tmp_path):
    """``--python venv/bin/python`` and an active ``VIRTUAL_ENV``: the venv's python is a
    dangling link. The active venv used to be skipped without a word, and fidoctor's own
    interpreter diagnosed in its place."""
    base = tmp_path / "base" / "bin"  # the base install, by a link: venv links its python to it
    base.mkdir(parents=True)
    ver = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    (base / ver).symlink_to(base_python())
    subprocess.run([str(base / ver), "-m", "venv", "--without-pip", str(tmp_path / "venv")],
                   check=True, timeout=120)
    shutil.rmtree(base.parent)  # the base Python is removed (pyenv uninstall, an upgrade)
    env, _ = _trap(tmp_path)
    py = tmp_path / "venv" / "bin" / "python"
    _refused(run_cli(["diagnose", "--python", str(py)], env=env, timeout=60),
             "a dangling symlink", "base Python is gone")
    r = run_cli(["diagnose", "--json"], env=dict(env, VIRTUAL_ENV=str(tmp_path / "venv")),
                timeout=60)
    _refused(r, f"VIRTUAL_ENV={tmp_path / 'venv'}:", "a dangling symlink")


def test_real_interpreters_and_wrappers_pass():
    """What must keep working: this venv's python (a symlink to a shared-libpython build),
    the base binary, Debian's static-libpython python3, a pyenv shim, a conda-style copy."""
    ok = [sys.executable, str(base_python())]
    ok += [p for p in ("/usr/bin/python3", "/root/.pyenv/shims/python3") if os.path.exists(p)]
    for p in ok:
        assert pyexe.problem(p) is None, (p, pyexe.problem(p))


def test_a_shim_named_python_must_pass_its_arguments_on(tmp_path):
    good = tmp_path / "a" / "python3"
    good.parent.mkdir()
    good.write_text(f"#!/usr/bin/env bash\nexec {base_python()} \"$@\"\n")
    good.chmod(0o755)
    assert pyexe.problem(str(good)) is None
    r = run_cli(["diagnose", "--json", "--python", str(good)],
                env=dict(os.environ, FLASHINFER_WORKSPACE_BASE=str(tmp_path / "ws")), timeout=60)
    assert r.returncode in (0, 1, 2) and '"target"' in r.stdout, r.stderr
    bad = tmp_path / "b" / "python"
    bad.parent.mkdir()
    bad.write_text("#!/bin/bash\necho owned\n")
    bad.chmod(0o755)
    assert "does not pass its arguments on" in (pyexe.problem(str(bad)) or "")


@pytest.mark.skipif(not list(PYENV.glob("2.*/bin/python2.*")), reason="no pyenv Python 2 here")
def test_python2_is_refused():
    py2 = sorted(PYENV.glob("2.*/bin/python2.*"))[0]
    r = run_cli(["diagnose", "--python", str(py2)], timeout=60)
    _refused(r, "a Python 2 interpreter")


@pytest.mark.skipif(not shutil.which("gdb"), reason="no gdb (a program embedding libpython) here")
def test_a_program_embedding_libpython_is_not_an_interpreter():
    why = pyexe.problem(shutil.which("gdb") or "")
    assert why is not None and ("embeds Python" in why or "no Python interpreter" in why), why


def test_watch_of_a_shell_wrapper_never_runs_the_shell_as_python(tmp_path, procs):
    """``watch --pid <a bash wrapper>``: when a stall is explained and ``diagnose --pid`` of
    the subject is refused (no Python), the session fell back to the wrapper's own binary as
    the interpreter and ran ``bash -c <fidoctor's script>`` with the server's PATH. Now it
    falls back to the server environment's venv, else fidoctor's own interpreter."""
    from fidoctor.live.events import Emitter
    from fidoctor.live.session import Options, Session, read_target

    env, marker = _trap(tmp_path)
    sh = procs.start(["bash", "-c", "sleep 600; true"], env=env)
    procs.find("sleep")
    argv, penv, start, exe = read_target(sh.pid)
    assert exe and os.path.basename(exe) == "bash"
    sess = Session(sh.pid, argv, penv, Emitter(quiet=True), Options(), start, python=exe)
    try:
        snap = sess.explain("stall:test", sh.pid, force=True)
    finally:
        sess.close()
    assert snap is not None and snap.context["python"] != exe, snap.context["python"]
    assert pyexe.problem(snap.context["python"]) is None
    assert not marker.exists(), marker.read_text()


def test_a_bare_name_says_where_path_would_find_it(tmp_path):
    """A hurried ``--python python3`` (a name, as a shell would take it): fidoctor reads it as
    a file in the current directory. Before: "no such file", though ``python3`` is right there
    on PATH; now the error says --python takes a path and names the one PATH gives."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python3").symlink_to(base_python())
    env = dict(os.environ, PATH=f"{bindir}:/usr/bin:/bin")
    r = subprocess.run([sys.executable, "-m", "fidoctor", "diagnose", "--python", "python3"],
                       env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"--python takes a path; on PATH that name is {bindir / 'python3'}: pass that" \
        in r.stderr, r.stderr


def test_fleet_ray_python_that_is_a_shell_is_refused_and_never_run(tmp_path):
    """``fleet --ray --ray-python /bin/bash``: the Ray driver (Python) was run as ``bash -c
    <driver>``, whose first line ran the ``import`` on PATH (twice). One word is an interpreter
    and is judged like ``--python``; a command (``uv run python``) is still run as given."""
    env, marker = _trap(tmp_path)
    for word in ("/bin/bash", "bash"):
        r = run_cli(["fleet", "--ray", "--ray-python", word, "--timeout", "20"], env=env,
                    timeout=60)
        _refused(r, "--ray-python", "no Python interpreter")
        assert "Python that has ray" in r.stderr, r.stderr
    assert not marker.exists(), marker.read_text()


def _foreign(tmp_path) -> Path:
    """A copy of this machine's CPython with its ELF header's e_machine set to another CPU's
    (aarch64, or x86_64 on an aarch64 box): what an image built for the other platform holds.
    The kernel refuses it with ENOEXEC; no such interpreter can be installed here for real."""
    import struct

    exe = tmp_path / "foreign" / "bin" / "python3"
    exe.parent.mkdir(parents=True)
    shutil.copy(base_python(), exe)
    with open(exe, "r+b") as f:
        head = f.read(20)
        machine = struct.unpack_from("<H", head, 18)[0]
        f.seek(18)
        f.write(struct.pack("<H", 183 if machine != 183 else 62))
    return exe


def test_an_interpreter_for_another_cpu_is_refused(tmp_path):
    """``warmup --plan --python <aarch64 python>`` on x86_64 died with "internal error: OSError:
    Exec format error"; diagnose called it an unusable target. Now both refuse it up front,
    and a child that cannot be executed at all is a one-line error in warmup too."""
    exe = _foreign(tmp_path)
    env, _ = _trap(tmp_path)
    for cmd in (["diagnose"], ["warmup", "--plan", "--arch", "9.0a"]):
        _refused(run_cli([*cmd, "--python", str(exe)], env=env, timeout=60),
                 "a program for another CPU")
    from fidoctor.errors import FidoctorError
    from fidoctor.warmup.supervisor import run_child

    with pytest.raises(FidoctorError, match="cannot start the target interpreter"):
        run_child(str(exe), {"mode": "describe"}, env, timeout=30)


def test_an_interpreter_on_a_noexec_mount_says_so(tmp_path):
    """A venv on a ``noexec`` mount (a hardened /tmp, a container volume): "not executable (mode
    755)" pointed at the mode bits; the mount is what forbids it. A real tmpfs mounted noexec."""
    mnt = tmp_path / "noexec"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "noexec,size=64m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        shutil.copy(base_python(), mnt / "python3")
        _refused(run_cli(["diagnose", "--python", str(mnt / "python3")], timeout=60),
                 "mounted noexec")
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_a_pasted_path_with_whitespace_says_so(tmp_path):
    """``--python "/opt/venv/bin/python "`` (a copy-paste with a trailing space or newline) said
    only "no such file" for a file the user can see."""
    py = str(base_python())
    for pasted in (py + " ", py + "\n"):
        _refused(run_cli(["diagnose", "--python", pasted], timeout=60),
                 "the path has whitespace around it")


# Short ids: pytest puts the test id into PYTEST_CURRENT_TEST, and a 200,000-character id
# made that one environment variable too long for execve (E2BIG) under older pytest.
@pytest.mark.parametrize("reply", ["[" * 200000, '{"modules": 5, "packages": "x"}'],
                         ids=["200000-deep", "wrong-shape"])
def test_a_target_whose_reply_is_garbage_is_unusable_not_uncheckable(tmp_path, reply):
    """A real CPython whose sitecustomize prints at exit (after fidoctor's query script): a
    200,000-deep JSON line died in RecursionError, a wrong-shaped one in AttributeError, inside
    the gatherer — "not gathered: target", every target probe inconclusive, and
    target-python-unusable itself silent. Now that interpreter is unusable, said so."""
    from target_helpers import misbehaving_python

    py = misbehaving_python(tmp_path / "python3", "import atexit, os\n"
                            f"atexit.register(lambda: os.write(1, b'\\n' + {reply.encode()!r}))\n")
    r = run_cli(["diagnose", "--json", "--python", str(py)], timeout=120,
                env=dict(os.environ, FLASHINFER_WORKSPACE_BASE=str(tmp_path / "ws")))
    doc = json.loads(r.stdout)
    f = [x for x in doc["findings"] if x["id"] == "target-python-unusable"]
    assert f and "not the reply" in " ".join(f[0]["evidence"]), [x["id"] for x in doc["findings"]]


def test_a_mise_shim_is_accepted(tmp_path):
    """mise (formerly rtx) links every shim to its own binary (``shims/python3 -> mise``), which
    picks the Python by argv[0]. mise is not installed here: ``mise`` is a gcc-built stand-in
    that does what the shim does (exec the Python with the same arguments); what is judged
    is the link's name and the binary it resolves to, never run."""
    src = tmp_path / "mise.c"
    src.write_text('#include <unistd.h>\nint main(int c, char **v) { (void)c; '
                   f'execv("{base_python()}", v); return 127; }}\n')
    mise = tmp_path / "bin" / "mise"
    mise.parent.mkdir()
    subprocess.run(["gcc", "-o", str(mise), str(src)], check=True, timeout=120)
    shim = tmp_path / "shims" / "python3"
    shim.parent.mkdir()
    shim.symlink_to(mise)
    assert pyexe.problem(str(shim)) is None
    assert pyexe.problem(str(mise)) is not None  # the binary itself, not named python
    r = run_cli(["diagnose", "--json", "--python", str(shim)], timeout=120,
                env=dict(os.environ, FLASHINFER_WORKSPACE_BASE=str(tmp_path / "ws")))
    doc = json.loads(r.stdout)
    assert doc["target"]["usable"] is True, doc["target"]
