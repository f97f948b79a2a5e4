"""Benchmark the ELF part of fidoctor on N distinct gcc-built modules (default 1,000).

Builds (once, cached under $FIDOCTOR_TEST_CACHE/bench-elf-N) a FlashInfer cache
of N distinct module .so files linked against NVIDIA's real 12.9.79 libcudart,
then measures:
  1. the fast reader, cold (empty fact cache) and warm (all hits), in-process;
  2. pyelftools on a sample, extrapolated to N (why the fast reader exists);
  3. ``fidoctor diagnose --json`` end to end, cold and warm: wall time and the
     peak RSS of the largest process (fidoctor or a forked gatherer).

Usage: .venv/bin/python bench/bench_elf.py [--modules 1000] [--repeat 3]
No asserts: figures go in the report. Needs gcc and PyPI (first run only).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from cudart_helpers import extract_cudart, test_cache  # noqa: E402

from fidoctor.elf import FactCache, read_facts  # noqa: E402

SRC = """
int cudaGetDeviceCount(int *); int cudaGetLastError(void); int cudaSetDevice(int);
int cudaLaunchKernel(const void *, unsigned long long, unsigned long long, void **,
                     unsigned long, void *);
int cudaFuncSetAttribute(const void *, int, int); void *memcpy(void *, const void *, unsigned long);
int mod_{i}_run(int x) {{ int n = x + {i}; cudaGetDeviceCount(&n); cudaSetDevice(n);
  cudaFuncSetAttribute(0, 8, {i}); cudaLaunchKernel(0, 1, 1, 0, 0, 0); return cudaGetLastError(); }}
{extra}
"""


def build(n: int) -> Path:
    root = test_cache() / f"bench-elf-{n}"
    done = root / "done"
    if done.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    lib = root / "lib"
    lib.mkdir(parents=True)
    extract_cudart("12.9.79", lib / "libcudart.so.12")
    os.symlink("libcudart.so.12", lib / "libcudart.so")
    ops = root / "base" / ".cache" / "flashinfer" / "0.7.2" / "90a" / "cached_ops"

    def one(i: int) -> None:
        d = ops / f"mod_{i:04d}"
        d.mkdir(parents=True)
        extra = "\n".join(f"int helper_{i}_{k}(int a) {{ return a * {k}; }}" for k in range(i % 40))
        (d / "src.c").write_text(SRC.format(i=i, extra=extra))
        (d / "build.ninja").write_text(f"ninja_required_version = 1.3\nname = mod_{i:04d}\n"
                                       f"cuda_home = /usr/local/cuda\n")
        subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(d / f"mod_{i:04d}.so"),
                        str(d / "src.c"), f"-L{lib}", "-lcudart"], check=True)
        (d / "src.c").unlink()

    t = time.monotonic()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as ex:
        list(ex.map(one, range(n)))
    print(f"built {n} modules in {time.monotonic() - t:.1f} s under {root}")
    done.write_text("ok\n")
    return root


def fast_reader(sos, repeat: int) -> None:
    for label in ("cold", "warm"):
        best = None
        for _ in range(repeat):
            with tempfile.TemporaryDirectory() as td:
                path = os.path.join(td, "elf.json")
                if label == "warm":
                    c = FactCache(path)
                    for so in sos:
                        c.facts(so)
                    c.save()
                t = time.perf_counter()
                c = FactCache(path)
                for so in sos:
                    c.facts(so)
                c.save()
                dt = time.perf_counter() - t
                best = dt if best is None else min(best, dt)
        print(f"fact cache {label}: {len(sos)} modules in {best * 1000:.0f} ms "
              f"({best / len(sos) * 1e6:.0f} µs/module, best of {repeat})")


def pyelftools_sample(sos, k: int = 50) -> None:
    sample = sos[:k]
    t = time.perf_counter()
    for so in sample:
        read_facts(so, reader="pyelftools")
    dt = (time.perf_counter() - t) / len(sample)
    print(f"pyelftools reader: {dt * 1000:.1f} ms/module → ~{dt * len(sos):.1f} s for "
          f"{len(sos)} (the fast reader exists because of this)")


WRAP = r"""
import json, resource, subprocess, sys, time
t = time.perf_counter()
r = subprocess.run(sys.argv[1:], capture_output=True, text=True)
dt = time.perf_counter() - t
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"wall_s": dt, "rc": r.returncode, "maxrss_kb": kids,
                  "out": r.stdout[-200000:], "err": r.stderr[-2000:]}))
"""


def end_to_end(root: Path, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as td:
        env = dict(os.environ, FLASHINFER_WORKSPACE_BASE=str(root / "base"),
                   XDG_CACHE_HOME=td, CUDA_HOME="/usr/local/cuda")
        for label in ["cold"] + ["warm"] * repeat:
            if label == "cold":
                shutil.rmtree(td, ignore_errors=True)
                os.makedirs(td)
            r = subprocess.run([sys.executable, "-c", WRAP, sys.executable, "-m", "fidoctor",
                                "diagnose", "--json"], env=env, capture_output=True, text=True)
            res = json.loads(r.stdout)
            gather = json.loads(res["out"])["gather"] if res["out"].strip() else {}
            secs = {k: v["elapsed_s"] for k, v in gather.items()}
            print(f"diagnose --json {label}: {res['wall_s']:.2f} s wall, rc {res['rc']}, "
                  f"peak RSS {res['maxrss_kb'] / 1024:.0f} MB; elf {secs.get('elf')} s, "
                  f"cache {secs.get('cache')} s, cudart {secs.get('cudart')} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--modules", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    root = build(a.modules)
    sos = sorted(str(p) for p in (root / "base").rglob("*.so"))
    print(f"{len(sos)} modules, {sum(os.path.getsize(s) for s in sos) / 1e6:.1f} MB; "
          f"{os.cpu_count()} cores; getrusage self {resource.getrusage(0).ru_maxrss // 1024} MB")
    fast_reader(sos, a.repeat)
    pyelftools_sample(sos)
    end_to_end(root, a.repeat)


if __name__ == "__main__":
    main()
