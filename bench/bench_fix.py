"""Benchmark `fidoctor fix` / `undo`: the transaction layer's cost on real files.

Moving a module aside is one rename, but fidoctor first records the sha256 of
every file in it (so undo can prove byte-for-byte restoration) and checks it
again after moving back; that hashing is the cost that grows with module
size. Replacing a file costs a backup copy + temp write + fsyncs.

    python bench/bench_fix.py                      # module dirs of 10 and 200 MB, 20-module CLI run
    python bench/bench_fix.py --mb 10 100 1000 --modules 50
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fidoctor.txn import apply_steps, undo
from fidoctor.txn.safety import fingerprint
from fidoctor.txn.steps import MoveAside, PutFile

NAME = "batch_prefill_with_kv_cache_dtype_q_bf16_head_dim_qk_128_bench{i}"


def module(ws: Path, i: int, mb: int) -> Path:
    d = ws / "cached_ops" / NAME.format(i=i)
    d.mkdir(parents=True)
    (d / "build.ninja").write_text("ninja_required_version = 1.3\n"
                                   "build k.cuda.o: cuda_compile k.cu\n")
    per = max(1, mb // 8)
    for k in range(8 if mb >= 8 else 1):
        (d / f"k{k}.cuda.o").write_bytes(os.urandom(per << 20))
    (d / f"{d.name}.so").write_bytes(b"\x7fELF" + bytes(16))  # truncated: incomplete
    return d


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def bench_move(tmp: Path, mb: int) -> None:
    ws = tmp / f"ws{mb}" / "0.7.2" / "90a"
    d = module(ws, 0, mb)
    state = str(tmp / f"state{mb}")
    step = MoveAside(src=str(d), dst=str(ws / "fidoctor-quarantine" / "b" / d.name),
                     root=str(ws), fp=fingerprint(str(d)))
    t_apply, _ = timed(lambda: apply_steps(state, [step], {}))
    t_undo, _ = timed(lambda: undo(state))
    print(f"move-aside {mb:5d} MB module: apply {t_apply:.3f} s, undo {t_undo:.3f} s")


def bench_replace(tmp: Path, kb: int) -> None:
    d = tmp / "lib"
    d.mkdir(exist_ok=True)
    target, new = d / "libcudart.so.12", tmp / "new.so"
    target.write_bytes(os.urandom(kb << 10))
    new.write_bytes(os.urandom(kb << 10))
    state = str(tmp / "state-replace")
    step = PutFile(path=str(target), root=str(d), source=str(new),
                   new_sha=hashlib.sha256(new.read_bytes()).hexdigest(),
                   old_sha=hashlib.sha256(target.read_bytes()).hexdigest())
    t_apply, _ = timed(lambda: apply_steps(state, [step], {}))
    t_undo, _ = timed(lambda: undo(state))
    print(f"put-file   {kb:5d} KB file:   apply {t_apply:.3f} s, undo {t_undo:.3f} s")


def bench_cli(tmp: Path, n: int) -> None:
    base = tmp / "clibase"
    ws = base / ".cache" / "flashinfer" / "0.7.2" / "90a"
    for i in range(n):
        module(ws, i, 1)
    env = dict(os.environ, FLASHINFER_WORKSPACE_BASE=str(base),
               XDG_STATE_HOME=str(tmp / "clistate"), NO_COLOR="1")
    fix = [sys.executable, "-m", "fidoctor", "fix", "--yes", "--no-warmup",
           "--only", "cache-incomplete-module"]
    t_fix, r = timed(lambda: subprocess.run(fix, env=env, capture_output=True, text=True))
    assert r.returncode == 0, r.stdout + r.stderr
    t_undo, r = timed(lambda: subprocess.run([sys.executable, "-m", "fidoctor", "undo"],
                                             env=env, capture_output=True, text=True))
    assert r.returncode == 0, r.stdout + r.stderr
    print(f"CLI: fix of {n} incomplete modules (gather, plan, apply, re-diagnose) "
          f"{t_fix:.2f} s; undo {t_undo:.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, nargs="+", default=[10, 200])
    ap.add_argument("--modules", type=int, default=20)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fidoctor-bench-fix-"))
    try:
        for mb in args.mb:
            bench_move(tmp, mb)
        bench_replace(tmp, 700)  # about the size of libcudart.so.12
        bench_cli(tmp, args.modules)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
