"""Collect every node's ``diagnose --json`` over ssh, Slurm or Ray, under one deadline.

Why processes and a select loop (not threads): a node that hangs (a dead
mount, a stuck ssh) must never hold the summary back. Every collector is a
child process in its own session; the loop reads all their pipes at once
with per-node byte caps, and at ``--timeout`` (or a node's own ``per_node``
timeout) kills the stragglers' process groups and lists them as unreachable
with what they printed on stderr. Nothing here judges: the reports go to
``load.judge`` like files do.

ssh: one ``ssh -o BatchMode=yes -o ConnectTimeout=N HOST fidoctor diagnose --json``
per line of HOSTFILE (``[user@]host[:port]``, ``#`` comments), all at once
(at most ``parallel``); args after ``--`` go to ssh (``-i KEY``, ``-F CONFIG``).
Slurm: one ``srun --ntasks-per-node=1 --label [SRUN_ARGS] sh -c 'fidoctor
diagnose --json | tr -d "\\n"; echo'``: each task's report is one labelled line.
Ray: a driver script run by the target python (``--ray-python``, where ray is
installed) that runs one task per alive node, pinned to it
(``NodeAffinitySchedulingStrategy(soft=False)``), each running the same command.
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from fidoctor.errors import FidoctorError
from fidoctor.fleet.load import Loaded, judge

NODE_CAP = 64 << 20
STDERR_CAP = 64 << 10


@dataclass
class Job:
    name: str
    argv: List[str]
    per_node_s: float
    proc: Optional[subprocess.Popen] = None
    out: bytearray = field(default_factory=bytearray)
    err: bytearray = field(default_factory=bytearray)
    started: float = 0.0
    done: bool = False
    why: str = ""


def remote_command(fidoctor: str, level: str, python: Optional[str] = None) -> List[str]:
    cmd = shlex.split(fidoctor) + ["diagnose", "--json"]
    if python:
        cmd += ["--python", python]
    if level == "quick":
        cmd += ["--level", "quick"]
    return cmd


_USER = r"(?:[\w.-]+@)?"
_NAME = re.compile(rf"({_USER})([\w.-]+)(?::(\d+))?")           # host, host:port
_V6_BRACKET = re.compile(rf"({_USER})\[([0-9A-Fa-f:.%\w-]+)\](?::(\d+))?")  # [v6]:port
_V6_BARE = re.compile(rf"({_USER})([0-9A-Fa-f]*:[0-9A-Fa-f:.]*:[0-9A-Fa-f:.%\w-]*)")  # ::1


def parse_host(line: str) -> Optional[Tuple[str, Optional[str]]]:
    """``[user@]host[:port]``, ``[user@][v6addr][:port]`` or a bare IPv6 address →
    (ssh destination, port or None); None when the line is none of these.

    A bare IPv6 address has no port (``fe80::1`` is not host ``fe80:`` port 1); ssh takes
    the address without brackets (``ssh '[::1]'`` cannot resolve a host name ``[::1]``)."""
    if line.startswith("-"):
        return None
    for rx in (_V6_BRACKET, _V6_BARE, _NAME):
        m = rx.fullmatch(line)
        if m:
            port = m.group(3) if m.lastindex and m.lastindex >= 3 else None
            if port is not None and not 0 < int(port) < 65536:
                return None
            return m.group(1) + m.group(2), port
    return None


def shell_line(cmd: List[str]) -> str:
    """``cmd`` as one line for the node's shell, every word quoted, except that a leading
    ``~/`` of the program is left for that shell to expand: ``--fidoctor
    '~/.local/bin/fidoctor'`` names the node user's own install (pipx, ``uv tool``), which
    non-interactive ssh shells often lack on PATH."""
    words = [shlex.quote(c) for c in cmd]
    if cmd and cmd[0].startswith("~/") and len(cmd[0]) > 2:
        words[0] = "~/" + shlex.quote(cmd[0][2:])
    return " ".join(words)


# The first 80 characters are what the text summary shows (and groups nodes by).
NOT_FOUND = "exit 127, no fidoctor there: --fidoctor PATH (pipx: '~/.local/bin/fidoctor')"


def read_hostfile(path: str) -> List[Tuple[str, Optional[str], str]]:
    """(ssh destination, port, the line as written) for each host of HOSTFILE, each host once
    (a host listed twice is one node: diagnosed once, counted once)."""
    from fidoctor.safeio import SMALL_CAP, read_bytes

    hosts: List[Tuple[str, Optional[str], str]] = []
    seen = set()
    for n, line in enumerate(read_bytes(path, SMALL_CAP, what="host file").decode(
            "utf-8-sig", "replace").splitlines(), 1):  # -sig: a BOM from a Windows editor
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        hp = parse_host(line)
        if hp is None:
            raise FidoctorError(f"{path}:{n}: {line[:80]!r} is not [user@]host[:port]")
        key = (hp[0].lower(), hp[1] or "22")
        if key not in seen:
            seen.add(key)
            hosts.append((hp[0], hp[1], line))
    if not hosts:
        raise FidoctorError(f"{path} lists no hosts", "one [user@]host[:port] per line")
    return hosts


def ssh_jobs(hostfile: str, extra: List[str], cmd: List[str], per_node_s: float) -> List[Job]:
    jobs = []
    for host, port, label in read_hostfile(hostfile):
        argv = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={max(1, int(per_node_s))}",
                *(["-p", port] if port else []), *extra, host, "--", shell_line(cmd)]
        jobs.append(Job(label, argv, per_node_s))
    return jobs


def run_jobs(jobs: List[Job], timeout_s: float, parallel: int = 64) -> None:
    """Run every job (at most ``parallel`` at once) until done, its own timeout, or ours."""
    end = time.monotonic() + timeout_s
    waiting = list(jobs)
    running: Dict[int, Any] = {}  # fd -> (job, "out"|"err")
    try:
        while waiting or running:
            while waiting and len({id(j) for j, _ in running.values()}) < parallel:
                _start(waiting.pop(0), running)
            now = time.monotonic()
            live = {id(j): j for j, _ in running.values()}
            wait = min([end] + [j.started + j.per_node_s for j in live.values()]) - now
            ready = _ready(list(running), max(0.0, wait)) if running else []
            for fd in ready:
                job, kind = running[fd]
                chunk = os.read(fd, 1 << 20)
                buf = job.out if kind == "out" else job.err
                cap = NODE_CAP if kind == "out" else STDERR_CAP
                if chunk and len(buf) < cap:
                    buf += chunk[: cap - len(buf)]
                if not chunk:
                    _close(job, fd)
                    del running[fd]
                    if not any(j is job for j, _ in running.values()):
                        _reap(job)
            now = time.monotonic()
            for fd, (job, _) in list(running.items()):
                if now >= end or now >= job.started + job.per_node_s:
                    limit = min(job.per_node_s, timeout_s)
                    _kill(job, f"timed out after {limit:g} s")
                    _close(job, fd)
                    del running[fd]
            if time.monotonic() >= end:
                for job in waiting:
                    job.why, job.done = f"not started within --timeout {timeout_s:g} s", True
                waiting = []
    finally:
        for fd, (job, _) in running.items():
            _kill(job, "interrupted")
            _close(job, fd)


def _ready(fds: List[int], wait_s: float) -> List[int]:
    """The readable (or closed) fds; poll, not select: a big fleet passes FD_SETSIZE (1024)."""
    p = select.poll()
    for fd in fds:
        p.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    return [fd for fd, _ in p.poll(wait_s * 1000)]


def _start(job: Job, running: Dict[int, Tuple[Job, str]]) -> None:
    try:
        job.proc = subprocess.Popen(job.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True)
    except OSError as e:
        job.why, job.done = f"cannot run {job.argv[0]}: {e.strerror or e}", True
        return
    job.started = time.monotonic()
    assert job.proc.stdout is not None and job.proc.stderr is not None
    running[job.proc.stdout.fileno()] = (job, "out")
    running[job.proc.stderr.fileno()] = (job, "err")


def _close(job: Job, fd: int) -> None:
    """Close one of a job's pipes through its file object (so it is closed exactly once)."""
    assert job.proc is not None
    for f in (job.proc.stdout, job.proc.stderr):
        if f is not None and not f.closed and f.fileno() == fd:
            f.close()


def _reap(job: Job) -> None:
    assert job.proc is not None
    try:
        rc = job.proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        _kill(job, "did not exit after closing its output")
        return
    job.done = True
    if rc != 0 and not job.out.strip().startswith(b"{"):
        tail = job.err.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        job.why = NOT_FOUND if rc == 127 else f"exit {rc}"
        job.why += f": {tail[0][:200]}" if tail[0] else ""


def _kill(job: Job, why: str) -> None:
    if job.proc is not None and job.proc.poll() is None:
        try:
            os.killpg(job.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            job.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    if not job.done:
        job.why, job.done = why, True


def into(jobs: List[Job], loaded: Loaded, source: str) -> None:
    """Each job's one report (or why there is none) into ``loaded``."""
    for job in jobs:
        text = bytes(job.out).strip()
        if job.why and not text.startswith(b"{"):
            judge({"node": job.name, "unreachable": job.why}, f"{source}:{job.name}", job.name,
                  loaded)
            continue
        try:
            obj = json.loads(text)
        except ValueError:
            err = job.err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
            judge({"node": job.name, "unreachable": f"no report: {err[0][:200]}"},
                  f"{source}:{job.name}", job.name, loaded)
            continue
        judge(obj, f"{source}:{job.name}", job.name, loaded)


def slurm_job(extra: List[str], cmd: List[str], timeout_s: float) -> Job:
    inner = shell_line(cmd) + " | tr -d '\\n'; echo"
    argv = ["srun", "--ntasks-per-node=1", "--label", *extra, "sh", "-c", inner]
    return Job("srun", argv, timeout_s)


def split_labelled(job: Job) -> List[Job]:
    """``srun --label`` output (``3: {...}``) → one job per task, as if run apart."""
    per: Dict[str, Job] = {}
    for raw in bytes(job.out).split(b"\n"):
        m = re.match(rb"^\s*(\d+): ?(.*)$", raw)
        if not m:
            continue
        task = m.group(1).decode()
        j = per.setdefault(task, Job(f"task{task}", [], job.per_node_s, done=True))
        j.out += m.group(2)
    for raw in bytes(job.err).split(b"\n"):
        m = re.match(rb"^\s*(\d+): ?(.*)$", raw)
        if m and m.group(1).decode() in per:
            per[m.group(1).decode()].err += m.group(2) + b"\n"
    out = [per[k] for k in sorted(per, key=int)]
    if job.why and not any(bytes(j.out).strip().startswith(b"{") for j in out):
        out.append(Job("srun", [], job.per_node_s, done=True, why=job.why, err=job.err))
    elif job.why:
        for j in out:
            if not bytes(j.out).strip().startswith(b"{"):
                j.why = job.why
    return out


RAY_DRIVER = r'''
import json, socket, subprocess, sys, time
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
address, cmd, per_node = sys.argv[1] or None, json.loads(sys.argv[2]), float(sys.argv[3])
ray.init(address=address or "auto", logging_level="ERROR", log_to_driver=False)

@ray.remote(num_cpus=0)
def check(cmd, per_node):
    import os
    cmd = [os.path.expanduser(cmd[0]), *cmd[1:]]  # '~/…' is the node user's home
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=per_node)
        return socket.gethostname(), r.returncode, r.stdout.decode("utf-8", "replace"), \
            r.stderr.decode("utf-8", "replace")[-2000:]
    except subprocess.TimeoutExpired:
        return socket.gethostname(), None, "", f"timed out after {per_node:g} s"
    except OSError as e:
        return socket.gethostname(), None, "", f"cannot run {cmd[0]}: {e}"

nodes = [n for n in ray.nodes() if n.get("Alive")]
refs = {check.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
    n["NodeID"], soft=False)).remote(cmd, per_node): n for n in nodes}
ready, late = ray.wait(list(refs), num_returns=len(refs), timeout=per_node + 5)
for ref in ready:
    n = refs[ref]
    try:
        host, rc, out, err = ray.get(ref)
    except Exception as e:
        print(json.dumps({"node": n.get("NodeManagerHostname") or n["NodeID"],
                          "unreachable": f"ray task failed: {type(e).__name__}"}), flush=True)
        continue
    if out.strip().startswith("{"):
        print(json.dumps(json.loads(out)), flush=True)
    else:
        print(json.dumps({"node": host, "unreachable": f"exit {rc}: {err.strip()[-200:]}"}),
              flush=True)
for ref in late:
    n = refs[ref]
    print(json.dumps({"node": n.get("NodeManagerHostname") or n["NodeID"],
                      "unreachable": f"timed out after {per_node:g} s"}), flush=True)
'''


def ray_job(python: str, address: str, cmd: List[str], per_node_s: float,
            timeout_s: float) -> Job:
    argv = [*shlex.split(python), "-c", RAY_DRIVER, address, json.dumps(cmd), str(per_node_s)]
    return Job("ray", argv, timeout_s)


def ray_lines(job: Job, loaded: Loaded) -> None:
    n = 0
    for raw in bytes(job.out).split(b"\n"):
        raw = raw.strip()
        if not raw.startswith(b"{"):
            continue
        try:
            obj = json.loads(raw)
        except ValueError:
            continue
        n += 1
        judge(obj, f"ray:{n}", f"ray-node-{n}", loaded)
    if job.why or not n:
        err = job.err.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        judge({"node": "ray", "unreachable": (job.why or "no node answered") +
               (f": {err[0][:200]}" if err[0] else "")}, "ray", "ray", loaded)


def collect(hostfile: Optional[str], slurm: bool, ray_address: Optional[str], ray_python: str,
            extra: List[str], timeout_s: float, per_node_s: float, level: str, fidoctor: str,
            parallel: int, python: Optional[str] = None) -> Loaded:
    """Run the chosen collector and load what came back (see the module docstring)."""
    import shutil

    cmd = remote_command(fidoctor, level, python)
    loaded = Loaded()
    per = min(per_node_s, timeout_s)
    if hostfile:
        if not shutil.which("ssh"):
            raise FidoctorError("--ssh needs the ssh client on PATH")
        jobs = ssh_jobs(hostfile, extra, cmd, per)
        run_jobs(jobs, timeout_s, parallel)
        into(jobs, loaded, "ssh")
    elif slurm:
        if not shutil.which("srun"):
            raise FidoctorError("--slurm needs srun on PATH (run it inside an allocation, or "
                                "pass -N/-w after --)")
        job = slurm_job(extra, cmd, timeout_s)
        run_jobs([job], timeout_s)
        into(split_labelled(job), loaded, "slurm")
    else:
        job = ray_job(ray_python, "" if ray_address == "auto" else str(ray_address), cmd, per,
                      timeout_s)
        run_jobs([job], timeout_s)
        ray_lines(job, loaded)
    from fidoctor.fleet.load import _dedupe

    _dedupe(loaded)
    return loaded
