"""Benchmark `fidoctor cache export | import | verify` on real compiled FlashInfer modules.

The modules are six real nvcc builds made once by the real `fidoctor warmup
--arch 9.0a` in the cached target venv (tests/cache_helpers.compiled_base;
single-decode f16/bf16 × hd 64/128 and batch decode f16/bf16 × hd 64, ~5 min
the first time on this box). Each repeat imports into a fresh workspace
under a CUDA_HOME reached through another symlink (so every path and the
cuda_home string are rewritten) and verifies it; the figures are the wall
times of the real CLI processes (interpreter start included).

    python bench/bench_cache.py              # 6 modules, 5 repeats
    python bench/bench_cache.py --repeat 10
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from cache_helpers import compiled_base  # noqa: E402
from warmup_helpers import CUDA_HOME, build_env, target_venv  # noqa: E402

SIX = ("single-decode:f16:64", "single-decode:bf16:64", "single-decode:f16:128",
       "single-decode:bf16:128", "decode:f16:64", "decode:bf16:64")


def cli(args, env) -> float:
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "fidoctor", *args], env=env, capture_output=True,
                       text=True)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(args[:2])} failed ({r.returncode}): {r.stderr[-1500:]}"
                         f"{r.stdout[-1500:]}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    py = target_venv()
    built = compiled_base(SIX)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "six.tar"
        exp = cli(["cache", "export", "--python", str(py), "--arch", "9.0a", "-o", str(bundle)],
                  build_env(py.parent.parent, built))
        print(f"export of {len(SIX)} modules: {exp:.2f} s, {bundle.stat().st_size:,} bytes")
        link = Path(tmp) / "cuda-link"
        os.symlink(os.path.realpath(CUDA_HOME), link)
        imp, ver = [], []
        for i in range(a.repeat):
            base = Path(tmp) / f"base{i}"
            env = build_env(py.parent.parent, base, cuda_home=str(link),
                            extra={"XDG_STATE_HOME": str(Path(tmp) / f"state{i}")})
            imp.append(cli(["cache", "import", "--python", str(py), "--arch", "9.0a",
                            str(bundle)], env))
            ver.append(cli(["cache", "verify", "--python", str(py), "--arch", "9.0a"], env))
        both = [x + y for x, y in zip(imp, ver)]
        for label, xs in (("import", imp), ("verify", ver), ("import + verify", both)):
            print(f"{label:16} median {statistics.median(xs):.2f} s  min {min(xs):.2f} s  "
                  f"max {max(xs):.2f} s  ({a.repeat} runs, {len(SIX)} modules)")


if __name__ == "__main__":
    main()
