"""Options shared by every command that looks at a target environment."""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Tuple, Union

import click

from fidoctor.errors import FidoctorError
from fidoctor.snapshot import Snapshot
from fidoctor.snapshot.context import GatherContext, build_context


class PidParam(click.ParamType):
    """``--pid N`` or ``--pid auto`` (the serving process: ``fidoctor.servers.pick_serving``)."""

    name = "pid"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or value == "auto":
            return value
        text = str(value).strip()
        if text.lower() == "auto":
            return "auto"
        try:
            n = int(text)
        except ValueError:
            self.fail(f"{value!r} is not a process id (a number, or 'auto')", param, ctx)
        if n <= 0:
            self.fail(f"{value!r} is not a process id", param, ctx)
        return n


PID = PidParam()


class Seconds(click.FloatRange):
    """A float range of seconds that also refuses NaN, which passes every range check (its
    comparisons are all false): a NaN budget, stall limit or timeout would never end."""

    name = "seconds"

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if rv != rv:
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        return rv


ARCH_TOKEN = r"\d{1,2}\.\d[a-z]?"     # FlashInfer's MAJOR.MINOR[suffix]: 8.0, 9.0a, 12.0f


def arch_list_problem(value: str) -> Optional[str]:
    """Why FlashInfer cannot read ``value`` as FLASHINFER_CUDA_ARCH_LIST, or None.

    FlashInfer splits it on single spaces and each item on its one '.'
    (``compilation_context.py``: ``major, minor = arch.split(".")``): anything else raises
    ValueError inside the server, and inside warmup's child."""
    import re

    if value != " ".join(value.split()):
        return "items must be separated by single spaces (FlashInfer splits on ' ')"
    bad = [t for t in value.split(" ") if not re.fullmatch(ARCH_TOKEN, t)]
    if bad:
        return f"{bad[0]!r} is not MAJOR.MINOR[a|f] (e.g. 8.0, 9.0a, 12.0f)"
    return None


class ArchList(click.ParamType):
    """``--arch``: FLASHINFER_CUDA_ARCH_LIST as FlashInfer reads it; commas, semicolons and runs
    of spaces between items are taken as its single spaces ('9.0a,8.0' → '9.0a 8.0'). Anything
    FlashInfer would choke on is a usage error here, not a ValueError from the target."""

    name = "arch list"

    def convert(self, value, param, ctx):
        if value is None or not str(value).strip():
            return None
        text = " ".join(str(value).replace(",", " ").replace(";", " ").split())
        why = arch_list_problem(text)
        if why:
            self.fail(f"{value!r}: {why}", param, ctx)
        return text


PID_HELP = ("A running (or hung) server: its environment and interpreter drive every check. "
            "'auto' picks the serving process (maps libtorch/FlashInfer, runs sglang/vLLM, "
            "or builds) and says why.")


_PYTHON = click.option("--python", "python", metavar="PATH",
                       help="Interpreter of the serving environment (default: active venv/conda, "
                       "else fidoctor's own).")
_PID = click.option("--pid", type=PID, metavar="PID|auto", help=PID_HELP)
_DEEP = click.option("--deep", is_flag=True,
                     help="Also import torch in the target (in a guarded subprocess) to confirm.")
_FROM = click.option("--from", "from_file", metavar="SNAPSHOT", type=click.Path(dir_okay=False),
                     help="Replay a snapshot written by 'fidoctor snapshot' instead of gathering.")


def python_pid_options(f: Callable) -> Callable:
    """``--python``, ``--pid``: which environment (``cache``)."""
    return _PYTHON(_PID(f))


def live_target_options(f: Callable) -> Callable:
    """``--python``, ``--pid``, ``--deep`` for commands that gather now (``fix``, ``snapshot``)."""
    return _PYTHON(_PID(_DEEP(f)))


def target_options(f: Callable) -> Callable:
    """``--python``, ``--pid``, ``--deep``, ``--from`` for commands that gather or replay."""
    return _PYTHON(_PID(_DEEP(_FROM(f))))


_NO_REDACT = click.option("--no-redact", is_flag=True, help="Keep user names, host names, "
                          "addresses and secrets (for your eyes only).")


def output_options(what: str) -> Callable[[Callable], Callable]:
    """``-o/--output FILE`` (default: stdout) and ``--no-redact``, for ``what`` a command
    writes (``report``, ``snapshot``)."""
    output = click.option("-o", "--output", metavar="FILE", default="-", show_default=True,
                          help=f"Where to write {what} ('-' for stdout).")
    return lambda f: output(_NO_REDACT(f))


def _thread_group(pid: int) -> Optional[int]:
    """The process (thread group) a thread id belongs to, from ``/proc/PID/status``."""
    from fidoctor.procfs import read_proc

    for line in (read_proc(pid, "status", 1 << 16) or b"").decode("utf-8", "replace").splitlines():
        words = line.split()
        if words[:1] == ["Tgid:"] and len(words) > 1 and words[1].isdigit():
            return int(words[1])
    return None


def resolve_pid(pid: Union[int, str, None], quiet: bool = False) -> Tuple[Optional[int], Any]:
    """``--pid auto`` → (the chosen pid, the Choice), saying on stderr which and why."""
    if pid != "auto":
        n = int(pid) if pid is not None else None
        tgid = _thread_group(n) if n else None
        if n and tgid and tgid != n:  # a thread id (top -H, py-spy, a log's tid): its process
            if not quiet:
                click.echo(f"fidoctor: {n} is a thread of process {tgid}: looking at {tgid}",
                           err=True)
            n = tgid
        return n, None
    from fidoctor.servers import pick_serving

    choice = pick_serving()
    if not quiet:
        click.echo(f"fidoctor: {choice.why()}", err=True)
    return choice.chosen.pid, choice


def make_context(python: Optional[str], pid: Union[int, str, None], deep: bool,
                 quiet: bool = False) -> GatherContext:
    if python:
        from fidoctor import pyexe

        pyexe.check(python)
    n, choice = resolve_pid(pid, quiet)
    if n is not None and n <= 0:
        raise FidoctorError(f"--pid {n}: not a process id")
    ctx = build_context(python=python, pid=n, deep=deep)
    if choice is not None:
        ctx.extra["pid_auto"] = choice.to_dict()
    return ctx


def obtain_snapshot(python: Optional[str], pid: Optional[int], deep: bool,
                    from_file: Optional[str], level: str = "full") -> Snapshot:
    """Load ``--from`` or gather a fresh snapshot; exactly one source."""
    import gc

    if from_file:
        if python or pid:
            raise FidoctorError("--from replays a snapshot; it cannot be combined with "
                                "--python or --pid")
        was_on = gc.isenabled()
        gc.disable()  # decoding a 65 MB snapshot: collections in the middle cost 0.1 s
        try:
            snap = Snapshot.load(from_file)
        finally:
            if was_on:
                gc.enable()
        gc.freeze()  # as below
        return snap
    from fidoctor.snapshot.runner import gather_snapshot

    if level == "quick":  # static facts only, the whole gather cut at 4 s (fidoctor/quick.py)
        from fidoctor import quick

        ctx = make_context(python, pid, False, quiet=True)
        ctx.extra["level"] = "quick"  # the cache gatherer's cheap scan (gather/cache.py)
        snap = gather_snapshot(ctx, gatherers=quick.gatherers(), budget_s=quick.gather_budget(),
                               meanwhile=_load_probes)
    else:
        snap = gather_snapshot(make_context(python, pid, deep), meanwhile=_load_probes)
    # The snapshot lives until the command ends (diagnose, report): keep the cyclic GC from
    # walking its million objects again at each collection while the probes run (≈ 45 ms
    # on 10,000 modules). Frozen objects are still freed when their last reference goes.
    gc.freeze()
    return snap


def _load_probes() -> None:
    """Import the probes (every caller judges the snapshot next) while the gatherers work."""
    from fidoctor.probes import all_probes

    all_probes()


def log_options(f: Callable) -> Callable:
    """``--log FILE`` (repeatable, ``-`` for stdin, plain or gzip) and ``--log-only``."""

    @click.option("--log", "logs", multiple=True, metavar="FILE",
                  help="Server output to read too (SGLang, vLLM, FlashInfer; plain or .gz; "
                  "'-' for stdin); repeatable.")
    @click.option("--log-only", is_flag=True,
                  help="Read only the logs: do not gather this machine (for someone else's paste; "
                  "with --from, the snapshot's machine findings are left out).")
    @click.option("--log-timeout", type=Seconds(0.1, 3600), default=30.0,
                  show_default=True, metavar="SECONDS",
                  help="Stop reading a log after this long (a pipe that stays open, a huge "
                  "file); what was read is judged and the rest is reported as not checked.")
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        return f(*args, **kwargs)

    return wrapper


def with_logs(python: Optional[str], pid: Optional[int], deep: bool, from_file: Optional[str],
              logs: tuple, log_only: bool, log_timeout: float = 30.0,
              level: str = "full") -> Snapshot:
    """The snapshot to judge: gathered (or loaded), or a bare one for ``--log-only``, with
    the logs' analysis as its ``serverlog`` section."""
    import time

    from fidoctor.serverlog import SECTION, analyse
    from fidoctor.snapshot import Section

    if log_only and not logs:
        raise FidoctorError("--log-only needs at least one --log FILE")
    if log_only and (python or pid):
        raise FidoctorError("--log-only reads only the logs; it cannot be combined with "
                            "--python or --pid")
    if list(logs).count("-") > 1:
        raise FidoctorError("--log - (stdin) can be given only once")
    if log_only and not from_file:
        snap = Snapshot(context={"python": None, "python_source": "--log-only", "pid": None,
                                 "env": {}, "log_only": True, "flashinfer_root": None})
    else:
        snap = obtain_snapshot(python, pid, deep, from_file, level)
        if log_only:
            snap.context["log_only"] = True
    if logs:
        t0 = time.monotonic()
        data = analyse(list(logs), max_s=log_timeout)
        snap.sections[SECTION] = Section("ok", data, elapsed_s=round(time.monotonic() - t0, 4))
    return snap

