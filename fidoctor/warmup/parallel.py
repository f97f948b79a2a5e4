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
Modules start longest first and their compile jobs must fit in memory beside
the running ones'. ninja 1.13.2 takes jobserver tokens only when it starts
and when one of its own edges ends, so a token another ninja frees waits in
the pool until some ninja wakes (on the H200 the second FA3 module's last
kernels began 33 s after tokens were free). Hence: modules of one kind admitted
together split the free slots evenly, each ninja started on exactly its share
(``shares``, ``Budget.stage``); later, the next module starts once a few
tokens (``IDLE_LANES``, or as many as it has compile edges) sat idle in the
pool at two polls in a row. Without a jobserver (static ``-j``) the next one
starts when the running ones have fewer unfinished compile edges than the
budget. ``bench/sim_warmup.py`` replays the H200's edges through these rules.

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
import struct
import subprocess
import tempfile
import termios
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
# A module waiting to start takes idle jobserver slots once this many sit idle (or as many
# as it has compile edges): fewer leave it with too few lanes (a ninja grows only when one
# of its own edges ends), more leave slots idle longer (bench/sim_warmup.py).
IDLE_LANES = 4


@dataclass
class Budget:
    """One pool of compile jobs shared by every module's ninja."""

    total: int
    jobserver: bool
    reason: str
    fifo: str = ""
    held: int = 0   # tokens fidoctor keeps out of the pool (see reconcile)
    reserve: int = 0  # tokens kept aside while a ninja starts with its share (see stage)
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
            if self.reserve > 0:
                self.reserve -= 1
                self.held += 1
                continue
            try:
                got = os.read(self._fd, 1)
            except BlockingIOError:
                return False
            if not got:
                return False
            self.held += 1
        return True

    def idle(self) -> int:
        """Tokens in the pool now, counted without taking them (FIONREAD on the fifo)."""
        if self._fd is None:
            return 0
        try:
            buf = fcntl.ioctl(self._fd, termios.FIONREAD, b"\0\0\0\0")
        except OSError:
            return 0
        return int(struct.unpack("i", buf)[0])

    def stage(self, n: int) -> int:
        """Leave exactly ``n`` tokens in the pool (fewer if fewer are free) for the ninja
        about to start; the rest wait in ``reserve`` until ``unstage``. Why: ninja (1.13.2)
        takes tokens only when it starts and when one of its own edges ends, so the tokens
        it finds at its start are its lanes for the first round; the first of two FA3
        modules would otherwise take all it can and leave its twin the rest (10/6 on 16
        cores: the twin's last kernels start ~100 s late). Returns the tokens staged."""
        if self._fd is None:
            return 0
        while True:
            try:
                got = os.read(self._fd, 64)
            except BlockingIOError:
                break
            if not got:
                break
            self.reserve += len(got)
        k = max(0, min(n, self.reserve))
        self.give(k)
        self.reserve -= k
        return k

    def wait_taken(self, limit: float) -> None:
        """Until the ninja just started has taken what was staged (or ``limit`` s)."""
        end = time.monotonic() + limit
        while self.idle() > 0 and time.monotonic() < end:
            time.sleep(0.02)

    def unstage(self) -> None:
        """Every reserved token back into the pool."""
        self.give(self.reserve)
        self.reserve = 0

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


def shares(demands: List[int], free: int) -> List[int]:
    """Water-fill ``free`` job slots over modules of one kind admitted together: each gets
    the same number of lanes (never more than its compile edges), the remainder one each
    in order. Two FA3 modules on 16 cores: 8/8, so both finish their kernels in one round
    and their two short edges after (the H200 run's greedy 10/6 ended the second one
    ~85 s later; bench/sim_warmup.py)."""
    if not demands:
        return []
    free = max(free, len(demands))
    level = 0
    while level < max(demands) and sum(min(d, level + 1) for d in demands) <= free:
        level += 1
    out = [max(1, min(d, level)) for d in demands]
    left = free - sum(out)
    for i, d in enumerate(demands):
        if left > 0 and out[i] < d:
            out[i] += 1
            left -= 1
    return out


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
    share: int = 0           # lanes it starts with when admitted beside a twin (``shares``)
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

    def fits(self, running: List[Slot], cand: Slot, idle: Optional[int] = None) -> bool:
        """May ``cand`` start now? ``idle``: jobserver tokens that sat in the pool at two
        polls in a row (None: judge by the running modules' unfinished edges instead)."""
        if not running:
            return True
        if idle is not None:
            # ninja 1.13.2 takes tokens only when it starts or one of its own edges ends:
            # tokens in the pool wait there until a sleeping ninja wakes, so the running
            # modules' unfinished edges say nothing about the slots idle now. Start the
            # next module on them once a few sit idle (bench/sim_warmup.py: 4).
            want = max(1, min(IDLE_LANES, cand.total_edges - 1, self.budget.total - 1))
            if idle < want:
                return False
        elif sum(s.demand for s in running) >= self.budget.total:
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
