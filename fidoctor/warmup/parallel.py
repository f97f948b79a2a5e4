"""Build several modules at once, each by its own ninja, from one job budget.

Why its own ninja: FlashInfer's ``build_jit_specs`` runs one ninja over all
modules with its log in ``cached_ops/``, so every module's own
``build_and_load()`` recompiled everything afterwards (h200-facts.md). Here the
child (in the target) only writes each module's ``build.ninja``; we hold the
module's lock and run ``ninja -v -C cached_ops/<name> -f build.ninja`` exactly
as FlashInfer 0.6.1+ does, so the module's own ``.ninja_log`` is filled and a
later ``build_and_load()`` finds nothing to do.

One budget: ``total`` jobs ≈ cores (``--jobs`` caps it; memory can lower
it). With a ninja that speaks the GNU make jobserver (1.13+) every module's
ninja draws from one pool: ``total - 1`` tokens, less one held back for each
further ninja running (each ninja also runs one job on its implicit token),
so never more than ``total`` jobs at once; an older ninja gets a static ``-j``
from what is free.
Modules start longest first; the next one is admitted when the running ones
have fewer unfinished compile edges than the budget (their tails would leave
slots idle) and its compile jobs fit in memory beside theirs: a list
schedule, longest first, at module granularity.

Each module is guarded alone: its own stall and timeout verdicts, its own
ninja session ended alone (``terminate_tree``), its half-built dir moved aside
through the transaction layer. A cached module is asked first
(``ninja -n -d explain``): nothing to do → "cached"; a loadable module that
this environment would rebuild is left as it is, with the reason, unless
``rebuild`` was asked for (then it is moved aside first, so ``fidoctor undo``
gets it back if the rebuild fails).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from fidoctor.flashinfer.jobmem import GB_PER_JOB
from fidoctor.kill import terminate_tree
from fidoctor.warmup import verdicts
from fidoctor.warmup.child import first_error_line
from fidoctor.warmup.result import ModuleResult
from fidoctor.warmup.watch import TreeWatch

INTERVAL = 0.5
EXPLAIN_BUDGET_S = 30.0
RESERVE = 1 << 30
_PROGRESS = re.compile(r"^\[(\d+)/(\d+)\] ")
# Relative weight of one edge of each kind (medians on the H200: 9.8, 18.8, 66.9 s).
EDGE_WEIGHT = {"decode": 10.0, "fa2": 19.0, "fa3": 67.0}


@dataclass
class Budget:
    """One pool of compile jobs shared by every module's ninja."""

    total: int
    jobserver: bool
    reason: str
    fifo: str = ""
    held: int = 0   # tokens fidoctor keeps out of the pool (see reconcile)
    _fd: Optional[int] = None
    _dir: str = ""

    def open(self) -> None:
        """Create the jobserver's fifo with ``total - 1`` tokens; a static ``-j`` share per
        module instead when it cannot be made (a full or read-only TMPDIR)."""
        if not self.jobserver:
            return
        try:
            self._dir = tempfile.mkdtemp(prefix="fidoctor-jobs-")
            self.fifo = os.path.join(self._dir, "jobserver")
            os.mkfifo(self.fifo, 0o600)
            self._fd = os.open(self.fifo, os.O_RDWR | os.O_NONBLOCK)
            os.write(self._fd, b"+" * max(self.total - 1, 0))
        except OSError as e:
            self.close()
            self.jobserver = False
            self.reason += f"; no jobserver ({e.strerror or e}): a static -j per module"

    def reconcile(self, ninjas: int) -> bool:
        """Keep ``ninjas - 1`` tokens out of the pool: every ninja also runs one job on its
        implicit token, so pool + implicit tokens stay at ``total``. False when a token
        could not be taken now (the running ones hold them all: admit later)."""
        if not self.jobserver or self._fd is None:
            return True
        want = max(ninjas - 1, 0)
        while self.held > want:
            self.give(1)
            self.held -= 1
        while self.held < want:
            try:
                got = os.read(self._fd, 1)
            except BlockingIOError:
                return False
            if not got:
                return False
            self.held += 1
        return True

    def give(self, n: int) -> None:
        """Put ``n`` tokens (back) into the pool, e.g. those a killed ninja held."""
        if self._fd is not None and n > 0:
            try:
                os.write(self._fd, b"+" * n)
            except OSError:
                pass

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    def env(self, base: Dict[str, str]) -> Dict[str, str]:
        e = dict(base)
        e.pop("MAKEFLAGS", None)
        if self.jobserver:
            e["MAKEFLAGS"] = f"-j{self.total} --jobserver-auth=fifo:{self.fifo}"
        return e


def ninja_supports_jobserver(ninja: str) -> bool:
    """ninja 1.13+ (and Kitware's builds before it) take jobs from a make jobserver."""
    try:
        out = subprocess.run([ninja, "--version"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return False
    m = re.match(r"(\d+)\.(\d+)", out)
    return m is not None and ((int(m.group(1)), int(m.group(2))) >= (1, 13) or "jobserver" in out)


def weight(key: str, spec_ev: Dict[str, Any], mem_class: str, arch: Optional[str]) -> float:
    """A module's compile work in core-seconds, from the ETA table shared with the live
    watch (``flashinfer.eta``), else its edges × a per-kind edge cost (longest first)."""
    from fidoctor.flashinfer.eta import estimate

    est = estimate(spec_ev.get("name") or key, arch=arch, cores=1, jobs=1)
    if est is not None:
        return est.seconds
    return float(spec_ev.get("edges") or 1) * EDGE_WEIGHT.get(mem_class, 10.0)


def would_rebuild(ninja: str, workdir: str, env: Dict[str, str], text: Optional[str] = None
                  ) -> Tuple[Optional[bool], List[str]]:
    """Ask ninja (``-n -d explain``, through ``flashinfer.ninja.explain``) whether it would
    run anything in this module dir (with ``text`` standing in for its build.ninja), and
    why. (None, [why]) when it could not answer."""
    from fidoctor.flashinfer.ninja import explain

    ex = explain(workdir, ninja=ninja, timeout=EXPLAIN_BUDGET_S, env=env, text=text)
    if ex.get("status") != "ok":
        return None, [ex.get("error") or ex.get("status") or "no answer"]
    if not ex.get("work"):
        return False, []
    return True, list(ex.get("first") or []) or [f"ninja would run {ex.get('work')} step(s)"]


def short_reason(reason: str) -> str:
    """``command line changed for x.so`` from ninja's explain line with its full path."""
    text = reason.split("ninja explain:", 1)[-1].strip()
    return re.sub(r"/\S*/", "", text)


@dataclass
class Slot:
    """One module on its way: waiting for its lock, its build.ninja, or its ninja."""

    res: ModuleResult
    ev: Dict[str, Any]
    mem_class: str
    weight: float
    state: str = "pending"  # pending|writing|building|finished
    lock_fd: Optional[int] = None
    proc: Optional[subprocess.Popen] = None
    watch: Optional[TreeWatch] = None
    started: float = 0.0
    last_progress: float = 0.0
    waited_since: float = 0.0
    edges_total: int = 0
    edges_done: int = 0      # ninja's status line names finished edges (NINJA_STATUS %f)
    edges_running: int = 0   # ninja's children right now (one ``sh -c`` per edge)
    jobs: int = 0
    output: List[str] = field(default_factory=list)
    reader: Optional[threading.Thread] = None
    moved_for_rebuild: bool = False
    old_ninja: Optional[bytes] = None

    @property
    def total_edges(self) -> int:
        return self.edges_total or int(self.ev.get("edges") or 1)

    @property
    def demand(self) -> int:
        """Compile edges not finished yet (the link, last and ≈0.1 s, not counted): the
        slots this module can still fill."""
        return max(self.total_edges - 1 - self.edges_done, 0)

    def count_running(self) -> None:
        """Edges in flight: ninja's direct children (its status line comes only at the end
        of an edge when its output is a pipe)."""
        if self.proc is None or self.watch is None:
            return
        n = 0
        for p in self.watch.last_procs:
            try:
                n += p.ppid() == self.proc.pid
            except Exception:  # noqa: BLE001 - a process that just ended
                continue
        self.edges_running = n


def take_lock(path: str) -> Tuple[Optional[int], List[int]]:
    """(fd, []) with the module's flock held, or (None, holders) when another has it."""
    from fidoctor.proclocks import lock_holders

    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None, lock_holders(path)
    return fd, []


def drop_lock(slot: Slot) -> None:
    if slot.lock_fd is not None:
        os.close(slot.lock_fd)  # closing drops the flock
        slot.lock_fd = None


def start_ninja(slot: Slot, ninja: str, env: Dict[str, str], jobs: Optional[int]) -> None:
    workdir, nfile = slot.ev["workdir"], slot.ev["ninja_file"]
    argv = [ninja, "-v", "-C", workdir, "-f", nfile] + (["-j", str(jobs)] if jobs else [])
    slot.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=dict(env, NINJA_STATUS="[%f/%t] "),
                                 cwd=workdir, start_new_session=True)
    slot.watch = TreeWatch(slot.proc.pid, [d for d in (workdir, slot.ev.get("generated_dir"))
                                           if d])
    slot.started = slot.last_progress = time.monotonic()
    slot.state = "building"

    def read(stream, out: List[str]) -> None:
        for raw in iter(stream.readline, b""):
            ln = raw.decode("utf-8", "replace").rstrip("\n")
            out.append(ln)
            m = _PROGRESS.match(ln)
            if m:
                slot.edges_done = max(slot.edges_done, int(m.group(1)))
                slot.edges_total = int(m.group(2))
            if len(out) > 4000:
                del out[:1000]
        stream.close()

    slot.reader = threading.Thread(target=read, args=(slot.proc.stdout, slot.output),
                                   daemon=True)
    slot.reader.start()


def end_tree(slot: Slot) -> List[int]:
    """End this module's ninja session alone; the survivors (should be none)."""
    if slot.proc is None:
        return []
    survivors = terminate_tree(slot.proc.pid, sid=slot.proc.pid, grace=3.0)
    try:
        slot.proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        survivors.append(slot.proc.pid)
    if slot.reader is not None:
        slot.reader.join(timeout=2.0)
    return survivors


def build_failed(slot: Slot) -> None:
    """A failed ninja: quote the line that names the cause, keep the tail as detail."""
    text = "\n".join(ln for ln in slot.output if not _PROGRESS.match(ln))
    slot.res.status = "failed"
    slot.res.error = first_error_line(text) if text.strip() else \
        f"ninja exited {slot.proc.returncode if slot.proc else '?'} without output"
    slot.res.info["detail"] = text[-4000:]
    slot.res.verdict = verdicts.failed(slot.res)


@dataclass
class Admission:
    """Who may start now: the budget's idle slots and the memory beside the running ones."""

    budget: Budget
    available: int

    def fits(self, running: List[Slot], cand: Slot) -> bool:
        if not running:
            return True
        if sum(s.demand for s in running) >= self.budget.total:
            return False  # the running modules can still fill every slot: longest first
        if not self.budget.jobserver and self.free_static(running) < 1:
            return False
        per = max(GB_PER_JOB[s.mem_class] for s in running + [cand]) * 1e9
        jobs = (self.budget.total + len(running) + 1) if self.budget.jobserver else \
            sum(s.jobs for s in running) + self.free_static(running)
        return jobs * per <= max(self.available - RESERVE, 0)

    def free_static(self, running: List[Slot]) -> int:
        return self.budget.total - sum(s.jobs for s in running)


Hook = Callable[..., Any]
