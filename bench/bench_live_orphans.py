"""Figures for ``watch --pid WAITER`` around a SIGKILLed lock holder (issue 22, step 6).

  python bench/bench_live_orphans.py [RUNS]

The rig of tests/test_live_orphans.py (a holder Python with the module's real flock running
/usr/bin/ninja, compile steps ``fakecc`` nvcc blocked on a FIFO; a waiter polling the flock
like filelock; ``fidoctor watch --pid WAITER``), RUNS times (default 3). Per run: seconds
from the waiter's start to the lock-wait event (with the holder's build), and from the
holder's SIGKILL to lock-end and to the orphans event. One JSON object per run, then the
medians.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE.parent))

import psutil  # noqa: E402
from proc_helpers import Procs, set_subreaper  # noqa: E402

from tests.live_helpers import events_of  # noqa: E402
from tests.test_live_orphans import start, wait_for  # noqa: E402


def one() -> dict:
    with tempfile.TemporaryDirectory(prefix="fidoctor-bench-orphans-") as d:
        procs = Procs(Path(d))
        try:
            holder, waiter, watch, _ninja, fifo, ev = start(Path(d), procs, linger=0)
            t0 = psutil.Process(waiter.pid).create_time()
            wait = wait_for(ev, "lock-wait", watch)
            killed = time.time()
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait()
            got = wait_for(ev, "orphans", watch)
            end = next(e for e in events_of(ev) if e["event"] == "lock-end")
            with open(fifo, "w") as f:
                f.write("go")
            waiter.wait(timeout=60)
            return {"lock_wait_after_waiter_start_s": round(wait["t"] - t0, 2),
                    "lock_end_after_kill_s": round(end["t"] - killed, 2),
                    "orphans_after_kill_s": round(got["t"] - killed, 2),
                    "orphan_pids": len(got["pids"])}
        finally:
            procs.kill_all()


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    assert set_subreaper(True)
    rows = []
    for _ in range(runs):
        rows.append(one())
        print(json.dumps(rows[-1]))
    print(json.dumps({k: statistics.median(r[k] for r in rows) for k in rows[0]}))


if __name__ == "__main__":
    main()
