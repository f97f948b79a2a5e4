"""How fast and how flat ``fidoctor diagnose --log`` reads a server log.

Builds a log of the requested size from lines a real vLLM deployment prints
(request and throughput records with worker prefixes) with a JIT episode (a
FlashInfer build, a traceback with ninja output) once per MB, a gzip variant,
and a worst case where every block is such an episode; then times
``fidoctor diagnose --log-only --log FILE --json`` as a whole process and its
peak RSS (``/usr/bin/time``-free: ``resource.getrusage`` of the child).
Targets (issue 15): a 10 MB log in < 1 s; memory flat in log size.

    python bench/bench_serverlog.py --mb 1 10 100
    python bench/bench_serverlog.py --mb 10 100 --inprocess   # the analysis alone
"""

# ruff: noqa: E501  (real log lines are long)
from __future__ import annotations

import argparse
import gzip
import os
import resource
import subprocess
import sys
import tempfile
import time

# What a vLLM deployment prints while it serves (the bulk of a real 10 MB log) …
TRAFFIC = """(APIServer pid=1) INFO 11-29 05:{m:02d}:{s:02d} [loggers.py:123] Engine 000: Avg prompt throughput: 1234.5 tokens/s, Avg generation throughput: 432.1 tokens/s, Running: 12 reqs, Waiting: 0 reqs, GPU KV cache usage: 23.4%, Prefix cache hit rate: 71.2%
(APIServer pid=1) INFO:     10.0.0.7:53344 - "POST /v1/chat/completions HTTP/1.1" 200 OK
(APIServer pid=1) INFO 11-29 05:{m:02d}:{s:02d} [logger.py:41] Received request chatcmpl-9f2c: prompt: '<|im_start|>user\nSummarise the attached report<|im_end|>', params: SamplingParams(n=1, temperature=0.7, top_p=0.8, max_tokens=1024)
(Worker_TP{r} pid=45{r}) WARNING 11-29 05:{m:02d}:{s:02d} [cudagraph_dispatcher.py:101] cudagraph dispatching keys are not initialized. No cudagraph will be used.
"""
# … and, once per MB, a JIT episode: a build, a failure with ninja output in a traceback.
EPISODE = """(Worker_TP{r} pid=45{r}) 2026-11-29 05:{m:02d}:{s:02d},595 - INFO - core.py:594 - flashinfer.jit: Building JIT module batch_prefill_with_kv_cache_dtype_q_bf16_dtype_kv_bf16_dtype_o_bf16_dtype_idx_i32_head_dim_qk_128_head_dim_vo_128_posenc_0_use_swa_False_use_logits_cap_False_f16qk_False; this can take several minutes on first use.
(Worker_TP{r} pid=45{r}) ERROR 11-29 05:{m:02d}:{s:02d} [multiproc_executor.py:671] Traceback (most recent call last):
(Worker_TP{r} pid=45{r}) ERROR 11-29 05:{m:02d}:{s:02d} [multiproc_executor.py:671]   File "/usr/local/lib/python3.12/dist-packages/flashinfer/jit/cpp_ext.py", line 433, in run_ninja
(Worker_TP{r} pid=45{r}) ERROR 11-29 05:{m:02d}:{s:02d} [multiproc_executor.py:671] RuntimeError: Ninja build failed. Ninja output:
(Worker_TP{r} pid=45{r}) ERROR 11-29 05:{m:02d}:{s:02d} [multiproc_executor.py:671] [1/4]  /usr/local/cuda/bin/nvcc --generate-dependencies-with-compile -MF /root/.cache/flashinfer/0.7.2.post1/90a/cached_ops/x/x.cuda.o.d -c x.cu -o x.cuda.o
(Worker_TP{r} pid=45{r}) ERROR 11-29 05:{m:02d}:{s:02d} [multiproc_executor.py:671] /usr/bin/ld: cannot find -lcuda: No such file or directory
"""


def make_log(path: str, mb: float, gz: bool, worst: bool = False) -> int:
    """``worst``: every block is a JIT episode (every line is a candidate), else 1 per MB."""
    target = int(mb * (1 << 20))
    n = next_episode = 0
    opener = gzip.open if gz else open
    with opener(path, "wt", encoding="utf-8") as f:
        i = 0
        while n < target:
            fmt = dict(r=i % 8, m=(i // 60) % 60, s=i % 60)
            block = TRAFFIC.format(**fmt)
            if worst or n >= next_episode:
                block += EPISODE.format(**fmt)
                next_episode += 1 << 20
            f.write(block)
            n += len(block.encode())
            i += 1
    return n


INPROCESS = (
    "import resource, sys, time\n"
    "from fidoctor.serverlog import analyse\n"
    "t = time.perf_counter(); d = analyse([sys.argv[1]]); w = time.perf_counter() - t\n"
    "f = d['files'][0]\n"
    "print(w, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, f['complete'])\n")


def run_inprocess(path: str) -> tuple:
    """The analysis alone (no CLI start-up), in a fresh interpreter: seconds, peak RSS MB."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", INPROCESS, path], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=root))
    assert r.returncode == 0, r.stderr
    wall, rss, complete = r.stdout.split()
    return float(wall), float(rss), complete == "True"


def run(path: str) -> tuple:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "fidoctor", "diagnose", "--log-only", "--log", path,
                        "--json"], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    assert r.returncode in (0, 1), r.stderr
    return wall, rss_mb


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, nargs="+", default=[10.0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--inprocess", action="store_true",
                    help="time serverlog.analyse() alone in a fresh interpreter (no click needed)")
    args = ap.parse_args()
    if args.inprocess:
        with tempfile.TemporaryDirectory() as d:
            for mb in args.mb:
                for gz, worst in ((False, False), (True, False), (False, True)):
                    path = os.path.join(d, f"log-{mb:g}{'.gz' if gz else ''}{'-w' if worst else ''}")
                    make_log(path, mb, gz, worst)
                    best = min((run_inprocess(path) for _ in range(args.repeat)),
                               key=lambda x: x[0])
                    kind = " gzip" if gz else (" worst case" if worst else "")
                    print(f"{mb:g} MB{kind}: analyse {best[0]:.3f} s, peak RSS {best[1]:.0f} MB"
                          + ("" if best[2] else " (stopped at the time budget)"))
        return
    with tempfile.TemporaryDirectory() as d:
        base = os.path.join(d, "empty.log")
        open(base, "w").close()
        print(f"startup (empty log): {min(run(base)[0] for _ in range(args.repeat)):.3f} s")
        for mb in args.mb:
            for gz, worst in ((False, False), (True, False), (False, True)):
                path = os.path.join(d, f"log-{mb:g}{'.gz' if gz else ''}{'-worst' if worst else ''}")
                size = make_log(path, mb, gz, worst)
                walls = []
                for _ in range(args.repeat):
                    w, rss = run(path)
                    walls.append(w)
                kind = " gzip" if gz else (" worst case (every line a JIT/error line)" if worst
                                           else "")
                print(f"{mb:g} MB{kind} ({size / 1e6:.1f} MB text): best {min(walls):.3f} s, "
                      f"peak RSS so far {rss:.0f} MB")


if __name__ == "__main__":
    main()
