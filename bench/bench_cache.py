"""Benchmark `fidoctor cache export | import | verify` on real compiled FlashInfer modules.

By default the modules are six real nvcc builds made once by the real
`fidoctor warmup --arch 9.0a` in the cached CPU target venv
(tests/cache_helpers.compiled_base; single-decode f16/bf16 × hd 64/128 and
batch decode f16/bf16 × hd 64, ~5 min the first time on this box). Each
repeat imports into a fresh workspace under a CUDA_HOME reached through
another symlink (so every path and the cuda_home string are rewritten) and
verifies it; the figures are wall times of the real CLI processes
(interpreter start included). ``--first-call`` then times FlashInfer's own
``build_and_load()`` per module in the imported workspace (specs made by
warmup's child, run in the target) and checks its ninja was a no-op.

    python bench/bench_cache.py                     # 6 modules, 5 repeats
    python bench/bench_cache.py --first-call
    # on a GPU box, after `fidoctor warmup --python python3` (the default set):
    python bench/bench_cache.py --python python3 --base "$HOME" --arch 9.0a \\
        --modules decode:bf16,decode:f16,prefill-fa2:bf16,prefill-fa2:f16,prefill-fa3:bf16,prefill-fa3:f16 \\
        --first-call
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

SIX = ("single-decode:f16:64", "single-decode:bf16:64", "single-decode:f16:128",
       "single-decode:bf16:128", "decode:f16:64", "decode:bf16:64")

FIRST_CALL = r"""
import importlib.util, json, os, sys, time
spec = importlib.util.spec_from_file_location("fidoctor_child", sys.argv[1])
child = importlib.util.module_from_spec(spec); spec.loader.exec_module(child)
t0 = time.time()
import torch, flashinfer.jit as jit
out = {"import_s": round(time.time() - t0, 3), "modules": []}
gens = child.generators(jit)
for key in sys.argv[2].split(","):
    kind, dtype, hd = key.split(":")
    s = child.make_spec(gens, {"kind": kind, "dtype": dtype, "head_dim": hd}, torch)
    d = os.path.join(str(jit.env.FLASHINFER_JIT_DIR), s.name)
    before = sorted((n, os.stat(os.path.join(d, n)).st_mtime_ns) for n in os.listdir(d))
    t = time.time(); s.build_and_load(); dt = time.time() - t
    after = sorted((n, os.stat(os.path.join(d, n)).st_mtime_ns) for n in os.listdir(d))
    out["modules"].append({"key": key, "name": s.name, "first_call_s": round(dt, 4),
                           "recompiled": before != after})
print(json.dumps(out))
"""


def cli(args: List[str], env: Dict[str, str]) -> float:
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "fidoctor", *args], env=env, capture_output=True,
                       text=True)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(args[:2])} failed ({r.returncode}): {r.stderr[-1500:]}"
                         f"{r.stdout[-1500:]}")
    return dt


def env_for(base: Path, cuda_home: str, py: str, extra: Dict[str, str]) -> Dict[str, str]:
    env = dict(os.environ)
    env.update(FLASHINFER_WORKSPACE_BASE=str(base), CUDA_HOME=cuda_home, NO_COLOR="1",
               PATH=f"{Path(py).parent}:{env.get('PATH', '')}")
    env.update(extra)
    return env


def full_key(k: str) -> str:
    from fidoctor.warmup.specs import parse_spec

    return parse_spec(k).key


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--python", help="target interpreter (default: the test target venv)")
    ap.add_argument("--base", help="an already warmed FLASHINFER_WORKSPACE_BASE to export")
    ap.add_argument("--arch", default="9.0a")
    ap.add_argument("--modules", help="warmup specs (for --first-call; default: the six)")
    ap.add_argument("--first-call", action="store_true")
    a = ap.parse_args()
    keys = [full_key(k) for k in (a.modules.split(",") if a.modules else SIX)]
    extra: Dict[str, str] = {}
    if a.python:
        py = shutil.which(a.python) or a.python
        base_src = Path(a.base or os.environ.get("FLASHINFER_WORKSPACE_BASE") or Path.home())
        cuda = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    else:
        from cache_helpers import compiled_base
        from warmup_helpers import CUDA_HOME, build_env, target_venv

        py = str(target_venv())
        base_src = Path(a.base) if a.base else compiled_base(SIX)
        cuda = CUDA_HOME
        be = build_env(Path(py).parent.parent, base_src)
        extra = {k: be[k] for k in ("FLASHINFER_EXTRA_LDFLAGS",) if k in be}
    extra["FLASHINFER_CUDA_ARCH_LIST"] = a.arch
    arch = ["--arch", a.arch]
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "bundle.tar"
        exp = cli(["cache", "export", "--python", py, *arch, "-o", str(bundle)],
                  env_for(base_src, cuda, py, extra))
        print(f"export: {exp:.2f} s, {bundle.stat().st_size:,} bytes")
        link = Path(tmp) / "cuda-link"
        os.symlink(os.path.realpath(cuda), link)
        imp, ver = [], []
        for i in range(a.repeat):
            env = env_for(Path(tmp) / f"base{i}", str(link), py,
                          dict(extra, XDG_STATE_HOME=str(Path(tmp) / f"state{i}")))
            imp.append(cli(["cache", "import", "--python", py, *arch, str(bundle)], env))
            ver.append(cli(["cache", "verify", "--python", py, *arch], env))
        both = [x + y for x, y in zip(imp, ver)]
        for label, xs in (("import", imp), ("verify", ver), ("import + verify", both)):
            print(f"{label:16} median {statistics.median(xs):.2f} s  min {min(xs):.2f} s  "
                  f"max {max(xs):.2f} s  ({a.repeat} runs)")
        if a.first_call:
            env = env_for(Path(tmp) / "base0", str(link), py, extra)
            r = subprocess.run([py, "-c", FIRST_CALL, str(ROOT / "fidoctor" / "warmup" /
                                                         "child.py"), ",".join(keys)],
                               env=env, capture_output=True, text=True, timeout=1800)
            if r.returncode != 0:
                raise SystemExit(f"first call failed: {r.stderr[-2000:]}")
            doc = json.loads(r.stdout.strip().splitlines()[-1])
            print(f"first call after import (torch + flashinfer import {doc['import_s']} s):")
            for m in doc["modules"]:
                print(f"  {m['key']:24} build_and_load {m['first_call_s'] * 1000:8.1f} ms  "
                      f"{'RECOMPILED' if m['recompiled'] else 'reused (ninja no-op)'}")


if __name__ == "__main__":
    main()
