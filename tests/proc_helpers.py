"""Real build processes for the process/lock tests, and their guaranteed cleanup.

Nothing here is simulated: ``/usr/bin/ninja`` runs a real ``build.ninja`` in a
fixture box's ``cached_ops/<module>/``; its compile steps are a gcc-built C
program (``fakecc``) run under the names ``nvcc`` and ``cicc`` (symlinks, so
the kernel's comm, which psutil calls name(), is ``nvcc``/``cicc``). It either
blocks reading a FIFO (a hung compile) or burns CPU (a real, progressing one).
The Python "server" above ninja takes the module's flock like filelock does.

Orphans: when the server is SIGKILLed, ninja is re-parented to the nearest
child subreaper, else pid 1 (here pid 1 is ``process_api``, which we do not
control). The ``procs`` fixture makes the pytest process a subreaper for the
test, so orphans become *its* children: it can kill and reap them by pid, and
nothing leaks. The server is started in its own session (as a real server
is), so fidoctor sees the orphan's new parent (pytest, another session) as
not the Python that started it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Dict, List, Optional

import psutil

PR_SET_CHILD_SUBREAPER = 36
CACHE = Path(os.environ.get("FIDOCTOR_TEST_CACHE", os.path.expanduser("~/.cache/fidoctor-test")))

FAKECC_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
/* fakecc [--fifo PATH] [--burn SECONDS] [-o OUT] ...: block on a FIFO, burn CPU, write OUT */
int main(int argc, char **argv) {
    const char *fifo = 0, *out = 0; double burn = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--fifo") && i + 1 < argc) fifo = argv[++i];
        else if (!strcmp(argv[i], "--burn") && i + 1 < argc) burn = atof(argv[++i]);
        else if (!strcmp(argv[i], "-o") && i + 1 < argc) out = argv[++i];
    }
    if (fifo) { char b[256]; int fd = open(fifo, O_RDONLY); while (fd >= 0 && read(fd, b, sizeof b) > 0) {} }
    if (burn > 0) {
        struct timespec t0, t; volatile unsigned long x = 0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        do { for (int k = 0; k < 1000000; k++) x += k; clock_gettime(CLOCK_MONOTONIC, &t); }
        while ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 < burn);
    }
    if (out) { FILE *f = fopen(out, "w"); if (f) { fputs("obj\n", f); fclose(f); } }
    return 0;
}
"""

SERVER = textwrap.dedent('''
    """A stand-in FlashInfer server: take the module's flock, run ninja, wait."""
    import fcntl, os, subprocess, sys
    lock, moddir, log = sys.argv[1], sys.argv[2], sys.argv[3]
    jit_log = open(log, "a")  # FlashInfer's FileHandler keeps its log open
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    argv = ["/usr/bin/ninja", "-C", moddir] + sys.argv[4:]
    sys.exit(subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode)
''')

HOLDER = textwrap.dedent('''
    """Hold a flock and do nothing (a rank stuck while holding the JIT lock)."""
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("locked", flush=True)
    time.sleep(600)
''')

FLOCK_WAITER = textwrap.dedent('''
    """Wait for a lock exactly like filelock's UnixFileLock: poll, close, sleep 50 ms."""
    import fcntl, os, sys, time
    lock, log = sys.argv[1], sys.argv[2]
    jit_log = open(log, "a")
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            time.sleep(0.05)
            continue
        break
    time.sleep(600)
''')

BATON_WAITER = textwrap.dedent('''
    """torch FileBaton.wait(): spin while the baton file exists (0.1 s sleeps)."""
    import os, sys, time
    baton, log = sys.argv[1], sys.argv[2]
    jit_log = open(log, "a")
    while os.path.exists(baton):
        time.sleep(0.1)
''')


def fakecc() -> Path:
    """Build (once, cached) the fake compiler and its nvcc/cicc names; returns the bin dir."""
    d = CACHE / "fakecc-v1"
    exe = d / "fakecc"
    if not exe.exists():
        d.mkdir(parents=True, exist_ok=True)
        src = d / "fakecc.c"
        src.write_text(FAKECC_C)
        tmp = d / f"fakecc.{os.getpid()}"
        subprocess.run(["gcc", "-O0", "-o", str(tmp), str(src)], check=True)
        os.replace(tmp, exe)
    for name in ("nvcc", "cicc"):
        link = d / name
        if not link.exists():
            try:
                link.symlink_to("fakecc")
            except FileExistsError:
                pass
    return d


def write_module(ws: Path, name: str, compile_args: str, link: bool = True,
                 command: Optional[str] = None) -> Path:
    """A module dir with a real build.ninja whose compile step runs ``nvcc <compile_args>``.

    ``command`` replaces the whole compile command (a wrapper, say).
    """
    bindir = fakecc()
    d = ws / "cached_ops" / name
    d.mkdir(parents=True, exist_ok=True)
    src = ws / "generated" / name / "k0.cu"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_text("// kernel\n")
    obj = d / f"{name}_k0.cuda.o"
    lines = [
        "ninja_required_version = 1.3", f"name = {name}", "cuda_home = /usr/local/cuda", "",
        "rule cuda_compile",
        f"  command = {command or f'{bindir}/nvcc {compile_args} -o $out $in'}",
        "rule link", f"  command = {bindir}/cicc -o $out $in", "",
        f"build {obj}: cuda_compile {src}",
    ]
    if link:
        lines.append(f"build {d}/{name}.so: link {obj}")
    (d / "build.ninja").write_text("\n".join(lines) + "\n")
    return d


def script(tmp: Path, name: str, body: str) -> Path:
    p = tmp / name
    p.write_text(body)
    return p


class Procs:
    """Starts real processes, remembers every pid, and kills them all by pid."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.popens: List[subprocess.Popen] = []
        self.known: Dict[int, float] = {}  # pid -> create_time

    def remember(self, pid: int) -> None:
        try:
            self.known.setdefault(pid, psutil.Process(pid).create_time())
        except psutil.Error:
            pass

    def start(self, argv: List[str], env: Optional[Dict[str, str]] = None,
              new_session: bool = True, stdout=subprocess.DEVNULL) -> subprocess.Popen:
        p = subprocess.Popen(argv, env=env, start_new_session=new_session,
                             stdout=stdout, stderr=subprocess.DEVNULL)
        self.popens.append(p)
        self.remember(p.pid)
        return p

    def python(self, body_path: Path, *args: str, env=None, stdout=subprocess.DEVNULL):
        return self.start([sys.executable, str(body_path), *map(str, args)], env=env, stdout=stdout)

    def sweep(self) -> None:
        """Remember every descendant of what we started, and whatever runs in our tmp."""
        for pid in list(self.known):
            for c in _children(pid):
                self.remember(c)
        tag = str(self.tmp)
        for p in psutil.process_iter(["cmdline", "cwd"]):
            info = " ".join(p.info.get("cmdline") or []) + " " + (p.info.get("cwd") or "")
            if tag in info:
                self.remember(p.pid)

    def find(self, name: str, timeout: float = 20.0, state: Optional[str] = None) -> int:
        """Wait until a process called ``name`` runs below what we started; its pid."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sweep()
            for pid in self.known:
                try:
                    p = psutil.Process(pid)
                    if p.name() == name and (state is None or p.status() == state):
                        return pid
                except psutil.Error:
                    continue
            time.sleep(0.05)
        raise AssertionError(f"no {name} process appeared within {timeout} s")

    def alive(self) -> List[int]:
        return [pid for pid, ct in self.known.items() if same_alive(pid, ct)]

    def kill_all(self) -> List[int]:
        """SIGCONT+SIGKILL every remembered pid, reap ours; returns survivors."""
        self.sweep()
        for pid in self.alive():
            for sig in (signal.SIGKILL, signal.SIGCONT):
                try:
                    os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for pid in list(self.known):
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
            for p in self.popens:
                p.poll()
            if not self.alive():
                break
            time.sleep(0.05)
        return self.alive()


def same_alive(pid: int, ct: float) -> bool:
    """``pid`` still runs the process created at ``ct``: not gone, not a zombie, not reused."""
    try:
        p = psutil.Process(pid)
        return p.create_time() == ct and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def pid_alive(pid: int) -> bool:
    """``pid`` exists and is not a zombie. The state follows the *last* ``)`` of
    /proc/PID/stat: a process name may itself hold ``") "``."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _children(pid: int) -> List[int]:
    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def set_subreaper(on: bool) -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_CHILD_SUBREAPER, 1 if on else 0, 0, 0, 0) == 0


def make_fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


SECTIONS = ["host", "cache", "jitlog", "processes", "locks"]


def snap_of(env: Dict[str, str], window: float = 0.5):
    """A real snapshot (forked, budgeted gatherers) of the sections these tests need."""
    from fidoctor.snapshot.context import build_context
    from fidoctor.snapshot.runner import gather_snapshot

    ctx = build_context(python=sys.executable, env=env)
    ctx.sample_window_s = window
    return gather_snapshot(ctx, only=SECTIONS)


def start_server(procs: Procs, ws: Path, name: str, env: Dict[str, str], *ninja_args: str):
    """The Python server: holds tmp/<name>.lock and runs ninja on cached_ops/<name>."""
    server = script(procs.tmp, "server.py", SERVER)
    lock = ws / "cached_ops" / "tmp" / f"{name}.lock"
    moddir = ws / "cached_ops" / name
    return procs.python(server, lock, moddir, ws / "flashinfer_jit.log", *ninja_args, env=env)


def wait_for(pred, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def reparented(pid: int, old_ppid: int) -> bool:
    try:
        return psutil.Process(pid).ppid() != old_ppid
    except psutil.Error:
        return False
