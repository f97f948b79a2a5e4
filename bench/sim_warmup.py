"""Replay a warmup's real compile steps through warmup's scheduling rules, offline.

  python bench/sim_warmup.py [DIR_OF_NINJA_LOGS] [--cores 16] [--lag 1.0] [--json]

Why: device time is scarce, so the scheduling is judged here first, on the
step durations a real run left (``tests/fixtures/real-h200/ninja_logs/``:
issue 22's cold default set on the H200 machine, 16 cores). The model follows
what the real parts do:

- each module is one ninja that starts its ready steps in manifest order
  (ninja ≥ 1.12 breaks equal critical paths by edge id; FlashInfer lists the
  paged kernels 0–3, the ragged 0–3, then the base source and the binding);
  one step is one core; the link (≈ 0.1 s) is left out;
- ninja 1.13.2's jobserver client is *lazy*: it takes tokens only when it
  starts and when one of its own steps ends (``Builder::Build`` blocks in
  ``WaitForCommand``; watching the fifo came after 1.13.2, upstream commit
  9ec8b855). A token another ninja frees waits in the pool until a ninja
  wakes or a new one starts. This is what stretched the H200 run: the second
  FA3 module started on 6 slots and its last 3 steps began at +97 s, when its
  own first step ended, although tokens were free from +64 s;
- fidoctor polls every 0.5 s, admits the next module (longest first) while the
  running ones have fewer unfinished steps than slots and a token can be held
  back for its implicit job; the target writes one build.ninja at a time
  (``--lag`` s each) before the module's ninja starts.

Policies: ``greedy`` (before): a new ninja takes every token in the pool.
``split``: modules of one kind admitted in one pass split the free slots
evenly, each ninja started on exactly its share (``parallel.shares``,
``Budget.stage``). ``now`` (warmup today): ``split``, and later modules start
once ``IDLE_LANES`` tokens sat idle at two polls. ``now+eager``: the same
rules with a jobserver client that takes a free token at once (ninja after
1.13.2). ``ideal``: every step on one pool, longest first
(``ninjalog.list_schedule``), which no module-by-module scheduler beats.

Durations: ``logged`` are the run's own (steps ran ≈ 1.4–1.5× longer under a
full machine than one module at a time); ``quiet`` scales each kind to the
one-module-at-a-time medians of h200-facts.md (decode 9.8 s, FA2 18.8, FA3
66.9 per step). Ratios are against max(longest step, work ÷ cores), no import.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fidoctor.flashinfer.ninjalog import Edge, bounds, list_schedule, read_log  # noqa: E402
from fidoctor.warmup.parallel import IDLE_LANES, shares  # noqa: E402

FIXTURE = Path(__file__).resolve().parent.parent / "tests/fixtures/real-h200/ninja_logs"
QUIET_MEDIAN = {"decode": 9.8, "fa2": 18.8, "fa3": 66.9}


def kind(module: str) -> str:
    if module.endswith("_sm90"):
        return "fa3"
    return "fa2" if "prefill" in module else "decode"


def manifest_rank(output: str) -> int:
    """The step's place in FlashInfer's source list (ninja starts ready steps in it)."""
    m = re.search(r"(paged|ragged)(?:_sm90)?_kernel_mask_(\d)", output)
    if m:
        return int(m.group(2)) + (4 if m.group(1) == "ragged" else 0)
    if "decode_kernel" in output:
        return 0
    return 9 if "jit_binding" in output else 8


def load(src: Path) -> Dict[str, List[Edge]]:
    mods: Dict[str, List[Edge]] = {}
    for p in sorted(src.glob("*.ninja_log")):
        name = p.name[: -len(".ninja_log")]
        edges = [e for e in read_log(str(p), name) if not e.is_link]
        mods[name] = sorted(edges, key=lambda e: manifest_rank(e.output))
    return mods


def quiet(mods: Dict[str, List[Edge]]) -> Dict[str, List[Edge]]:
    """Each kind's steps scaled so their median is the quiet (one module at a time) median."""
    out: Dict[str, List[Edge]] = {}
    for k in QUIET_MEDIAN:
        secs = sorted(e.seconds for m, es in mods.items() if kind(m) == k for e in es)
        if not secs:
            continue
        f = QUIET_MEDIAN[k] / secs[len(secs) // 2]
        for m, es in mods.items():
            if kind(m) == k:
                out[m] = [Edge(e.module, e.output, e.seconds * f) for e in es]
    return out


@dataclass
class _Ninja:
    implicit: bool = True
    running: int = 0
    started: bool = False
    share: int = 0


class _Sim:
    """One warmup, event by event (see the module docstring for the model)."""

    def __init__(self, mods: Dict[str, List[Edge]], cores: int, policy: str, lag: float,
                 poll: float = 0.5) -> None:
        self.eager = policy.endswith("+eager")
        policy = policy.replace("+eager", "")
        self.order = sorted(mods, key=lambda m: -sum(e.seconds for e in mods[m]))
        self.todo = {m: list(es) for m, es in mods.items()}
        self.cores, self.policy, self.lag, self.poll = cores, policy, lag, poll
        self.pool, self.held, self.reserve = cores - 1, 0, 0
        self.ninjas: Dict[str, _Ninja] = {}
        self.events: List[Tuple[float, int, str, str]] = []
        self.seq = 0
        self.end = 0.0
        self.writes_until = 0.0  # the target writes one build.ninja at a time
        self.admitted: List[Tuple[str, float, int]] = []
        self.last_idle = 0

    def push(self, t: float, kind: str, m: str = "") -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, kind, m))

    def grab(self, m: str, now: float) -> None:
        n = self.ninjas[m]
        while self.todo[m]:
            if n.implicit:
                n.implicit, slot = False, "i"
            elif self.pool > 0:
                self.pool, slot = self.pool - 1, "e"
            else:
                return
            n.running += 1
            self.push(now + self.todo[m].pop(0).seconds, "done" + slot, m)

    def run(self) -> float:
        self.push(0.0, "poll")
        while self.events:
            now, _, kind, m = heapq.heappop(self.events)
            if kind.startswith("done"):
                n = self.ninjas[m]
                n.running -= 1
                self.end = max(self.end, now)
                if kind == "donei":
                    n.implicit = True
                else:
                    self.pool += 1
                self.grab(m, now)
                if not n.running and not self.todo[m]:
                    del self.ninjas[m]
            elif kind == "start":
                n = self.ninjas[m]
                if n.share:  # Budget.stage: exactly share - 1 tokens in the pool
                    self.reserve += self.pool
                    self.pool = min(n.share - 1, self.reserve)
                    self.reserve -= self.pool
                n.started = True
                self.grab(m, now)
                if not any(o.share and not o.started for o in self.ninjas.values()):
                    self.pool, self.reserve = self.pool + self.reserve, 0
            else:
                self.admit(now)
                if self.order or self.ninjas:
                    self.push(now + self.poll, "poll")
            if self.eager:  # a client that watches the fifo takes a free token at once
                for m in [m for m, n in self.ninjas.items() if n.started and self.todo[m]]:
                    self.grab(m, now)
        return self.end

    def admit(self, now: float) -> None:
        want = max(len(self.ninjas) - 1, 0)
        while self.held > want:
            self.held, self.pool = self.held - 1, self.pool + 1
        batch: List[str] = []
        starting = any(not n.started for n in self.ninjas.values()) or self.reserve
        idle: Optional[int] = None
        if self.policy == "now" and self.ninjas:
            idle = 0 if starting else min(self.pool, self.last_idle)
            self.last_idle = 0 if starting else self.pool
        while self.order:
            demand = sum(len(self.todo[x]) + n.running for x, n in self.ninjas.items())
            if idle is not None:
                if idle < max(1, min(IDLE_LANES, len(self.todo[self.order[0]]), self.cores - 1)):
                    break
                idle = None
            elif self.ninjas and demand >= self.cores:
                break
            if self.ninjas:  # hold one back for its implicit job
                if self.reserve:
                    self.reserve -= 1
                elif self.pool:
                    self.pool -= 1
                else:
                    break
                self.held += 1
            m = self.order.pop(0)
            self.ninjas[m] = _Ninja()
            batch.append(m)
            self.writes_until = max(self.writes_until, now) + self.lag
            self.push(self.writes_until, "start", m)
        twins = [m for m in batch if kind(m) == kind(batch[0])] if batch else []
        free = self.cores - sum(n.running for n in self.ninjas.values())
        need = [len(self.todo[m]) for m in twins]
        if self.policy != "greedy" and len(twins) > 1 and sum(need) > free:
            for m, k in zip(twins, shares(need, free)):
                self.ninjas[m].share = k
        for m in batch:
            self.admitted.append((m, now, self.ninjas[m].share))


def simulate(mods: Dict[str, List[Edge]], cores: int, policy: str, lag: float = 1.0
             ) -> Tuple[float, List[Tuple[str, float, int]]]:
    """(makespan, [(module, admitted at, share)]) of one policy."""
    sim = _Sim(mods, cores, policy, lag)
    return sim.run(), sim.admitted


def label(m: str) -> str:
    return kind(m) + ("-f16" if "_f16_" in m else "-bf16")


POLICIES = ("greedy", "split", "now", "now+eager")


def ratio(mods: Dict[str, List[Edge]], cores: int, policy: str, lag: float) -> float:
    lb = bounds([e for es in mods.values() for e in es], cores)["lower_bound_s"]
    return simulate(mods, cores, policy, lag)[0] / lb


def jittered(mods: Dict[str, List[Edge]], rng: random.Random, jitter: float
             ) -> Dict[str, List[Edge]]:
    """Each step ± ``jitter`` (uniform): one FA3 module's edges moved ±10–15 % run to run."""
    return {m: [Edge(e.module, e.output, e.seconds * rng.uniform(1 - jitter, 1 + jitter))
                for e in es] for m, es in mods.items()}


def report(mods: Dict[str, List[Edge]], cores: int, lag: float, runs: int, jitter: float
           ) -> dict:
    edges = [e for es in mods.values() for e in es]
    b = bounds(edges, cores)
    lb = b["lower_bound_s"]
    out: dict = {"work_s": b["work_s"], "longest_edge_s": b["longest_edge_s"],
                 "lower_bound_s": lb, "ideal_s": round(list_schedule(edges, cores), 1)}
    out["ratio"] = {"ideal": round(out["ideal_s"] / lb, 3)}
    for policy in POLICIES:
        end, adm = simulate(mods, cores, policy, lag)
        out[f"{policy}_s"] = round(end, 1)
        out["ratio"][policy] = round(end / lb, 3)
        out[f"{policy}_admissions"] = [(label(m), round(t, 1), k) for m, t, k in adm]
    if runs:
        out["jitter"] = {"runs": runs, "jitter": jitter}
        for policy in POLICIES:
            rs = sorted(ratio(jittered(mods, random.Random(i), jitter), cores, policy, lag)
                        for i in range(runs))
            out["jitter"][policy] = {"median": round(rs[runs // 2], 3),
                                     "p90": round(rs[int(runs * 0.9)], 3)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("logs", nargs="?", default=str(FIXTURE))
    ap.add_argument("--cores", type=int, default=16)
    ap.add_argument("--lag", type=float, default=1.0,
                    help="seconds from admission to the module's first step (default 1.0)")
    ap.add_argument("--runs", type=int, default=100,
                    help="jittered replays per policy (default 100; 0: none)")
    ap.add_argument("--jitter", type=float, default=0.15)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if not os.path.isdir(a.logs):
        print(f"sim_warmup: {a.logs}: not a directory of .ninja_log files", file=sys.stderr)
        return 2
    mods = load(Path(a.logs))
    if not any(mods.values()):
        print(f"sim_warmup: {a.logs}: no .ninja_log with a compile step", file=sys.stderr)
        return 2
    out = {"cores": a.cores, "lag_s": a.lag,
           "logged": report(mods, a.cores, a.lag, a.runs, a.jitter),
           "quiet": report(quiet(mods), a.cores, a.lag, a.runs, a.jitter)}
    if a.json:
        print(json.dumps(out, indent=2))
        return 0
    for name in ("logged", "quiet"):
        r = out[name]
        print(f"{name}: work {r['work_s']} s, longest step {r['longest_edge_s']} s, bound "
              f"{r['lower_bound_s']} s; ideal {r['ideal_s']} s ({r['ratio']['ideal']}×)")
        for policy in POLICIES:
            j = r.get("jitter", {}).get(policy)
            jit = f"; ±{a.jitter:.0%} steps, {a.runs} runs: median {j['median']}× p90 " \
                  f"{j['p90']}×" if j else ""
            print(f"  {policy:>6}: {r[policy + '_s']} s ({r['ratio'][policy]}×){jit}")
            print(f"          admitted (module, at s, lanes): {r[policy + '_admissions']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
