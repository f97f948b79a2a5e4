"""How long will this FlashInfer module take to build here? (module kind × arch × cores)

Why: a cold FA3 module takes 80–350 s and a serving stack may kill the start
after 300 s (SGLang's watchdog) or 600 s (vLLM's engine-ready timeout). The
live watch warns when a build will outlast such a clock, and ``warmup --plan``
says how long warming will take. Both need one estimate, from one table.

The model: a module is a handful of ninja edges (one ``.cu`` → one object,
then a link of ≈0.1 s); each edge costs about one core for its whole run
(nvcc runs ``--threads=1``, so the ``.ninja_log`` edge sum equals the CPU
seconds measured on the H200). ninja runs ``MAX_JOBS`` edges at once (its
default: cores + 2); when more edges run than there are cores they share
them. ``schedule()`` plays that out, so one table of per-edge costs answers
for any core count and ``MAX_JOBS``.

Where the figures come from (SEEDS, each entry names its source):
  * H200, 16 cores, nvcc 13.0.88, FlashInfer 0.7.2.post1, bf16/f16 head dim
    128, batch modules (knowledge/h200-facts.md, ``.ninja_log`` of a cold
    default-set warmup): decode edge median 9.8 s / max 10.9 s (3 per module),
    FA2 prefill 18.8 / 29.3 s, FA3 prefill 66.9 / 79.3 s (10 per module).
  * H100, 16 cores, same stack, single (not batch) modules, head dim 128
    (knowledge/h100-facts.md): single decode 8.8 / 9.8 / 13.1 s; single FA2
    prefill 10.0, 11.1 and four masks 18.3–19.6 s; single FA3 53.6, 54.2 and
    four masks 79.9–83.7 s.
  * This 2-core CPU box (knowledge/real-builds-on-cpu.md §3.4, MAX_JOBS 2,
    head dim 64): single decode 25.6 s; single FA3 346 s (edges 166, 166, 104,
    108, 67, 72.5 s, a run that overlapped a pip install). Kept as
    ``MEASURED`` walls, used to report the model's error, not to predict.

Refined by this machine's own history (``History``): every ``.ninja_log``
under the workspaces (edge wall times, made per-core by the edge's measured
concurrency) and FlashInfer's ``FLASHINFER_JIT_BUILD_LOG`` JSON lines (0.7.4+:
``{"toolchain", "name", "seconds", "pid", "time"}`` per build). A module built
here before is estimated from its own past; a kind seen here from its edges;
anything else from the seeds scaled by this machine's speed against them.

Stable API (``warmup --plan`` and ``run``/``watch`` use it; add, never rename):
  kind_of(name_or_key) -> str
  estimate(name_or_key, arch=None, cores=None, jobs=None, history=None) -> Optional[Estimate]
  remaining(est, elapsed, done=0, total=0) -> Optional[float]
  History.gather(workspaces, build_log=None, cores=None) -> History
  jobs_for(env, cores) -> int
  finished_in_run(ninja_log, outputs, since) -> List[float]
  reestimate(finished, running, total, jobs) -> Optional[Reestimate]

Mid-build (``reestimate``): once the running ninja has finished an object, its own
``.ninja_log`` says what an object costs *here, now* (the wall time of each finished edge, at
this build's own concurrency, on this machine under its present load). The objects still to
start queue behind the ones compiling, ``jobs`` at a time (the most ninja was seen running at
once): a list schedule of per-edge walls gives the time left, with a range from the fastest
and slowest finished edge. An object still compiling that has already outrun every finished
one says its cost is not known (edges differ: an FA3 kernel edge is 1.5× its binding edge);
then only a floor is given (``high`` None), never a made-up end.
"""

from __future__ import annotations

import json
import os
import re
import statistics
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from fidoctor.flashinfer.builds import module_dir_in
from fidoctor.flashinfer.modnames import parse_module_name
from fidoctor.fsutil import read_head

# warmup's kinds (fidoctor/warmup/specs.py KINDS), plus "other" for names we cannot place
KINDS = ("decode", "prefill-fa2", "prefill-fa3", "single-decode", "single-prefill-fa2",
         "single-prefill-fa3")
LINK_S = 0.15          # one link edge (measured 0.07–0.13 s)
SPREAD = 0.15          # one FA3 module's edges move together ±10–15 % between runs (H200)
LOW_EDGE = 0.5         # one module's cheapest edge ÷ its dearest, measured: 0.51 (H100 single FA2
#                        10.0/19.6 s), 0.64 (single FA3 53.6/83.7), 0.67 (decode 8.8/13.1), 0.45
#                        (this box, single decode hd64 11.1/24.4): a reestimate's edge range
MAX_LOG_BYTES = 4 << 20
MAX_LOGS = 2000


@dataclass(frozen=True)
class Seed:
    edges: Tuple[float, ...]   # core-seconds per compile edge (link not included)
    arch: str
    cores: int
    source: str


def _spread(n: int, median: float, top: float) -> Tuple[float, ...]:
    """n edges with this median and max (the rest at the median): what the H200 table gives."""
    return (top,) + (median,) * (n - 1)


SEEDS: Dict[str, Seed] = {
    "decode": Seed(_spread(3, 9.8, 10.9), "90a", 16,
                   "H200 16 cores, batch decode bf16/f16 hd128, .ninja_log: 3 edges, "
                   "median 9.8 s, max 10.9 s (h200-facts.md)"),
    "prefill-fa2": Seed(_spread(10, 18.8, 29.3), "90a", 16,
                        "H200 16 cores, batch prefill FA2 bf16/f16 hd128, .ninja_log: 10 edges, "
                        "median 18.8 s, max 29.3 s (h200-facts.md)"),
    "prefill-fa3": Seed(_spread(10, 66.9, 79.3), "90a", 16,
                        "H200 16 cores, batch prefill FA3 (sm90) bf16/f16 hd128, .ninja_log: "
                        "10 edges, median 66.9 s, max 79.3 s (h200-facts.md)"),
    "single-decode": Seed((13.1, 9.8, 8.8), "90a", 16,
                          "H100 16 cores, single decode f16 hd128, .ninja_log: 8.8/9.8/13.1 s "
                          "(h100-facts.md)"),
    "single-prefill-fa2": Seed((19.6, 19.2, 18.7, 18.3, 11.1, 10.0), "90a", 16,
                               "H100 16 cores, single prefill FA2 bf16 hd128, .ninja_log: "
                               "10.0, 11.1 s and masks 18.3–19.6 s (h100-facts.md)"),
    "single-prefill-fa3": Seed((83.7, 82.4, 81.2, 79.9, 54.2, 53.6), "90a", 16,
                               "H100 16 cores, single prefill FA3 (sm90) bf16 hd128, .ninja_log: "
                               "53.6, 54.2 s and masks 79.9–83.7 s (h100-facts.md)"),
}

# Whole-module walls measured on real machines: (kind, arch, cores, MAX_JOBS) -> (seconds, source).
# Used by bench/ to report the model's error; estimate() never returns these directly.
MEASURED: Dict[Tuple[str, str, int, int], Tuple[float, str]] = {
    ("prefill-fa3", "90a", 16, 16): (88.5, "H200 warmup, FA3 f16 module"),
    ("prefill-fa2", "90a", 16, 16): (29.3, "H200 warmup, FA2 bf16 module"),
    ("decode", "90a", 16, 16): (10.9, "H200 warmup, decode bf16 module"),
    ("single-decode", "90a", 16, 18): (13.2, "H100 first call, ninja 13.18 s"),
    ("single-prefill-fa2", "90a", 16, 18): (19.7, "H100 first call, ninja 19.72 s"),
    ("single-prefill-fa3", "90a", 16, 18): (83.9, "H100 first call, ninja 83.84 s"),
    ("single-decode", "90a", 2, 2): (25.6, "2-core CPU box, hd64, quiet run"),
    ("single-prefill-fa3", "90a", 2, 2): (346.2, "2-core CPU box, hd64, run overlapped a pip install"),
}


@dataclass(frozen=True)
class Estimate:
    """How long a module's build takes, start to end, on this machine."""
    kind: str
    seconds: float        # expected wall time of the whole build
    low: float
    high: float
    edges: int            # compile edges expected (link not counted)
    basis: str            # "history-module" | "history-kind" | "seed"
    source: str           # where the figure comes from, in words
    arch: str
    cores: int
    jobs: int


def kind_of(name_or_key: str) -> str:
    """ETA kind of a FlashInfer module name or a warmup key (``prefill-fa3:bf16:128``)."""
    head = name_or_key.split(":", 1)[0]
    if head in KINDS:
        return head
    info = parse_module_name(name_or_key)
    k, backend = info["kind"], info.get("backend")
    if k == "batch_decode":
        return "decode"
    if k == "single_decode":
        return "single-decode"
    if k == "batch_prefill":
        return f"prefill-{backend}"
    if k == "single_prefill":
        return f"single-prefill-{backend}"
    return "other"


def jobs_for(env: Optional[Mapping[str, str]], cores: int) -> int:
    """ninja's ``-j``: FlashInfer passes ``MAX_JOBS`` when it is all digits, else ninja uses cores + 2."""
    mj = (env or {}).get("MAX_JOBS", "")
    if mj.isdigit() and int(mj) > 0:
        return int(mj)
    return cores + 2 if cores > 2 else cores + 1 if cores == 2 else 2


def n_archs(arch: str) -> int:
    """How many gencodes a non-FA3 module compiles for: ``80_90a`` → 2, ``90a`` → 1."""
    return max(1, len([a for a in re.split(r"[_\s,;]+", arch or "") if a and a != "noarch"]))


def schedule(edges: Iterable[float], jobs: int, cores: int) -> float:
    """Wall time of ``edges`` (core-seconds each) run ``jobs`` at a time on ``cores``, in order.

    Processor sharing: k running edges progress at min(1, cores / k) each.
    """
    queue = list(edges)
    running: List[float] = []
    t = 0.0
    jobs, cores = max(1, jobs), max(1, cores)
    while queue or running:
        while queue and len(running) < jobs:
            running.append(queue.pop(0))
        rate = min(1.0, cores / len(running))
        step = min(running) / rate
        t += step
        running = [r - step * rate for r in running if r - step * rate > 1e-9]
    return t


def estimate(name_or_key: str, arch: Optional[str] = None, cores: Optional[int] = None,
             jobs: Optional[int] = None, history: Optional[History] = None) -> Optional[Estimate]:
    """The expected build time of one module here, or None when nothing is known of its kind."""
    kind = kind_of(name_or_key)
    arch = arch or "90a"
    cores = cores or os.cpu_count() or 1
    jobs = jobs or jobs_for(os.environ, cores)
    name = None if ":" in name_or_key or name_or_key in KINDS else name_or_key
    if history is not None and name:
        past = history.module_seconds(name)
        if past:
            mid = statistics.median(past)
            return Estimate(kind, mid, min(past) * (1 - SPREAD), max(past) * (1 + SPREAD),
                            history.edge_count(name) or len(SEEDS.get(kind, Seed((), "", 0, "")).edges),
                            "history-module", f"this machine built this module before "
                            f"({len(past)}×, median {mid:.0f} s)", arch, cores, jobs)
    if history is not None:
        edges = history.kind_edges(kind)
        if edges:
            n = len(SEEDS[kind].edges) if kind in SEEDS else max(1, round(len(edges) / max(
                1, history.kind_runs(kind))))
            per = statistics.median(edges)
            top = max(edges)
            modelled = (top,) + (per,) * (n - 1)
            wall = schedule(modelled, jobs, cores) + LINK_S
            return Estimate(kind, wall, wall * (1 - SPREAD), wall * (1 + SPREAD), n,
                            "history-kind", f"{len(edges)} {kind} edges built on this machine "
                            f"(median {per:.0f} s per edge), {jobs} jobs on {cores} cores",
                            arch, cores, jobs)
    seed = SEEDS.get(kind)
    if seed is None:
        return None
    factor = 1.0 if kind.endswith("fa3") else float(n_archs(arch))
    speed = history.speed_factor() if history is not None else None
    edges = [e * factor * (speed or 1.0) for e in seed.edges]
    wall = schedule(edges, jobs, cores) + LINK_S
    why = seed.source
    if factor != 1.0:
        why += f"; ×{factor:.0f} for {n_archs(arch)} archs ({arch})"
    if speed:
        why += f"; ×{speed:.2f} for this machine's speed (from its .ninja_log history)"
    return Estimate(kind, wall, wall * (1 - SPREAD), wall * (1 + SPREAD), len(edges), "seed",
                    f"{why}; {jobs} jobs on {cores} cores", arch, cores, jobs)


def remaining(est: Optional[Estimate], elapsed: float, done: int = 0, total: int = 0) -> Optional[float]:
    """Seconds left of a build ``elapsed`` s in, ``done`` of ``total`` edges finished.

    None when it cannot be told (no estimate, or the build already ran past the
    high end of it: say "longer than expected", never a negative ETA).
    """
    if total and done >= total:
        return 0.0
    if est is None:
        return None
    left = est.seconds - elapsed
    if left >= 0:
        return left
    return None if elapsed > est.high else 0.0


@dataclass(frozen=True)
class Reestimate:
    """Time left of a running build, from its own finished edges (``reestimate``)."""
    left: float               # ≈ seconds left (the floor, when ``high`` is None)
    low: float
    high: Optional[float]     # None: an object still compiling outran every finished one
    done: int                 # edges finished in this run
    total: int
    per_edge: float           # median wall of the finished edges
    jobs: int
    outrun: int               # objects compiling as long as the slowest finished one, or longer

    @property
    def source(self) -> str:
        return (f"{self.done}/{self.total} objects built in this run, median "
                f"{self.per_edge:.0f} s each, {self.jobs} at a time")


def _list_schedule(busy: Iterable[float], queue: Iterable[float], jobs: int) -> float:
    """When the last of ``queue`` ends, ``jobs`` slots at a time, slots busy for ``busy``."""
    import heapq

    slots = sorted(busy)
    slots += [0.0] * max(0, jobs - len(slots))
    heapq.heapify(slots)
    for q in queue:
        heapq.heappush(slots, heapq.heappop(slots) + q)
    return max(slots, default=0.0)


def reestimate(finished: List[float], running: List[float], total: int,
               jobs: int) -> Optional[Reestimate]:
    """Seconds left of a build from ninja's own progress, or None before an edge finished.

    ``finished``: wall seconds of the compile edges this run finished (``.ninja_log``);
    ``running``: seconds each edge compiling now has run; ``total``: compile edges of the
    build (``build.ninja``); ``jobs``: how many edges ninja runs at once.
    """
    finished = sorted(f for f in finished if f >= 0)
    if not finished or total <= 0:
        return None
    done = min(len(finished), total)
    running = list(running)[: max(0, total - done)]
    waiting = max(0, total - done - len(running))
    jobs = max(1, jobs, len(running))
    per, fast, slow = statistics.median(finished), finished[0], finished[-1]
    lo_edge, hi_edge = fast * LOW_EDGE, max(slow, fast / LOW_EDGE) * (1 + SPREAD)
    outrun = sum(1 for e in running if e >= slow)

    def busy(e: float, pick: str) -> float:
        """Seconds left of an edge that has run ``e`` s: at least none; about what the finished
        edges that took longer cost on average (none did: unknown, 0); at most ``hi_edge``."""
        if pick == "low":
            return 0.0
        if pick == "high":
            return max(hi_edge - e, 0.0)
        longer = [d for d in finished if d > e]
        return max(statistics.mean(longer) - e, 0.0) if longer else 0.0

    def left(edge: float, pick: str) -> float:
        return _list_schedule([busy(e, pick) for e in running], [edge] * waiting,
                              jobs) + LINK_S

    low = left(lo_edge, "low")
    if outrun:
        return Reestimate(low, low, None, done, total, per, jobs, outrun)
    mid = max(left(per, "mid"), low)
    return Reestimate(mid, low, max(left(hi_edge, "high"), mid), done, total, per, jobs, 0)


def finished_in_run(ninja_log: str, outputs: Iterable[str], since: float) -> List[float]:
    """Wall seconds of the edges among ``outputs`` that the newest ninja run in ``ninja_log``
    finished, each with its output written since ``since`` (epoch: the running ninja's start,
    so an older run's line for the same object is never taken for this one's)."""
    want = set(outputs)
    edges = read_ninja_log(ninja_log)
    runs = _runs(edges)
    if not runs:
        return []
    last: Dict[str, _Edge] = {}
    for e in runs[-1]:
        if e.output in want:
            last[e.output] = e
    out = []
    for e in last.values():
        try:
            fresh = os.stat(e.output if os.path.isabs(e.output) else os.path.join(
                os.path.dirname(ninja_log), e.output)).st_mtime >= since - 1
        except OSError:
            fresh = False
        if fresh:
            out.append((e.end_ms - e.start_ms) / 1000)
    return out


# ---- this machine's history ------------------------------------------------------------------

@dataclass
class _Edge:
    module: str
    output: str
    start_ms: int
    end_ms: int
    mtime_s: float


@dataclass
class History:
    """What this machine has built before: per-kind edge core-seconds, per-module walls."""
    cores: int = 1
    edges_by_kind: Dict[str, List[float]] = field(default_factory=dict)
    runs_by_kind: Dict[str, int] = field(default_factory=dict)
    walls: Dict[str, List[float]] = field(default_factory=dict)
    edges_per_module: Dict[str, int] = field(default_factory=dict)
    sources: List[str] = field(default_factory=list)

    @classmethod
    def gather(cls, workspaces: Iterable[str], build_log: Optional[str] = None,
               cores: Optional[int] = None) -> History:
        """Read every ``.ninja_log`` under the workspaces and the JSON build log (all capped)."""
        h = cls(cores=cores or os.cpu_count() or 1)
        seen = 0
        for ws in workspaces:
            root = os.path.join(ws, "cached_ops")
            for path in [os.path.join(root, ".ninja_log")] + _module_logs(root):
                if seen >= MAX_LOGS:
                    break
                edges = read_ninja_log(path)
                if edges:
                    seen += 1
                    h.add_ninja_edges(edges)
                    h.sources.append(path)
        if build_log:
            for rec in read_build_log(build_log):
                h.walls.setdefault(rec["name"], []).append(float(rec["seconds"]))
            h.sources.append(build_log)
        return h

    def add_ninja_edges(self, edges: List[_Edge]) -> None:
        for run in _runs(edges):
            objs = [e for e in run if not e.output.endswith(".so")]
            if not objs:
                continue
            by_mod: Dict[str, List[_Edge]] = {}
            for e in objs:
                by_mod.setdefault(e.module, []).append(e)
            for mod, mine in by_mod.items():
                kind = kind_of(mod)
                self.runs_by_kind[kind] = self.runs_by_kind.get(kind, 0) + 1
                self.edges_per_module[mod] = max(self.edges_per_module.get(mod, 0), len(mine))
                for e in mine:
                    self.edges_by_kind.setdefault(kind, []).append(
                        _core_seconds(e, run, self.cores))
                linked = [e for e in run if e.module == mod and e.output.endswith(".so")]
                if linked and len(mine) >= len(SEEDS.get(kind, Seed((), "", 0, "")).edges):
                    start = min(x.start_ms for x in mine)
                    self.walls.setdefault(mod, []).append((linked[-1].end_ms - start) / 1000)

    def module_seconds(self, name: str) -> List[float]:
        return [s for s in self.walls.get(name, []) if s >= 1.0]   # ≈0 s: ninja no-op

    def edge_count(self, name: str) -> int:
        return self.edges_per_module.get(name, 0)

    def kind_edges(self, kind: str) -> List[float]:
        return self.edges_by_kind.get(kind, [])

    def kind_runs(self, kind: str) -> int:
        return self.runs_by_kind.get(kind, 0)

    def speed_factor(self) -> Optional[float]:
        """Median of (this machine's edge ÷ the seed's median edge) over the kinds seen, or None."""
        ratios = []
        for kind, edges in self.edges_by_kind.items():
            seed = SEEDS.get(kind)
            if seed and edges:
                ratios.append(statistics.median(edges) / statistics.median(seed.edges))
        return statistics.median(ratios) if ratios else None


def _module_logs(root: str) -> List[str]:
    try:
        with os.scandir(root) as it:
            names = sorted(e.name for e in it if e.is_dir(follow_symlinks=False) and e.name != "tmp")
    except OSError:
        return []
    return [os.path.join(root, n, ".ninja_log") for n in names[:MAX_LOGS]]


def read_ninja_log(path: str) -> List[_Edge]:
    """Edges of a ``# ninja log v5/v6/v7`` file (start ms, end ms, mtime, output, hash)."""
    data = read_head(path, MAX_LOG_BYTES)
    if data is None:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    if not lines or not lines[0].startswith("# ninja log v"):
        return []
    out = []
    for ln in lines[1:]:
        parts = ln.split("\t")
        if len(parts) < 4:
            continue
        try:
            start, end, mtime = int(parts[0]), int(parts[1]), int(parts[2])
        except ValueError:
            continue
        mod = module_dir_in(parts[3]) if os.path.isabs(parts[3]) else \
            module_dir_in(os.path.join(os.path.dirname(path), parts[3]))
        if not mod or end < start:
            continue
        out.append(_Edge(os.path.basename(mod), parts[3], start, end, _seconds(mtime)))
    return out


def _seconds(mtime: int) -> float:
    """ninja's TimeStamp: nanoseconds since 1.10 (seconds in older logs)."""
    if mtime > 10**17:
        return mtime / 1e9
    if mtime > 10**14:
        return mtime / 1e6
    return float(mtime)


def _runs(edges: List[_Edge]) -> List[List[_Edge]]:
    """Split a log into ninja invocations. Each run appends its edges as they finish, with
    times counted from that run's start, so a run ends where the end time goes backwards.
    (The third column is no clock to group by: ninja ≥ 1.10 records the newest input's
    mtime or the command's start there, not when the output was written.)"""
    runs: List[List[_Edge]] = []
    last_end = None
    for e in edges:
        if last_end is None or e.end_ms < last_end:
            runs.append([])
        runs[-1].append(e)
        last_end = e.end_ms
    return runs


def _core_seconds(e: _Edge, run: List[_Edge], cores: int) -> float:
    """An edge's wall time scaled by its share of the cores while it ran."""
    dur = (e.end_ms - e.start_ms) / 1000
    if dur <= 0:
        return 0.0
    busy = 0.0
    for o in run:
        lo, hi = max(o.start_ms, e.start_ms), min(o.end_ms, e.end_ms)
        if hi > lo:
            busy += (hi - lo) / 1000
    concurrency = busy / dur
    return dur * min(1.0, cores / max(concurrency, 1.0))


def read_build_log(path: str) -> List[Dict[str, Any]]:
    """``FLASHINFER_JIT_BUILD_LOG`` records ``{"name", "seconds", …}``; bad lines skipped."""
    data = read_head(path, MAX_LOG_BYTES)
    if data is None:
        return []
    out: List[Dict[str, Any]] = []
    for ln in data.decode("utf-8", "replace").splitlines():
        try:
            rec = json.loads(ln)
            if isinstance(rec, dict) and isinstance(rec.get("name"), str) and \
                    float(rec.get("seconds", -1)) >= 0:
                out.append(rec)
        except (ValueError, TypeError):
            continue
    return out
