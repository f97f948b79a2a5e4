"""Benchmark `fidoctor diagnose --json` as a whole process on a synthetic cache.

Builds (once, cached under --work) a FlashInfer 0.7-layout cache of N modules,
each a *distinct* real ELF .so compiled by gcc and linked against a gcc-built
``libcudart.so.12`` with real symbol versions (so the ELF gatherer does real
work), plus a flashinfer_jit.log of the requested size in the 0.7 and 0.2
formats with some binary garbage. A healthy box: CUDA_HOME points at the real
toolkit. Then it times cold (fidoctor's fact cache removed, page cache dropped
when permitted) and warm runs and reports peak RSS
(``ru_maxrss`` over diagnose and its forked gatherers).

    python bench/bench_diagnose.py                       # 1,000 modules, 100 MB log
    python bench/bench_diagnose.py --modules 250 500 1000 --log-mb 10 100   # scaling
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CUDART_SYMS = ["cudaLaunchKernel", "cudaGetDevice", "cudaSetDevice", "cudaFuncSetAttribute",
               "cudaGetErrorString", "cudaDeviceGetAttribute", "cudaGetDriverEntryPointByVersion"]
NAME = ("batch_prefill_with_kv_cache_dtype_q_bf16_dtype_kv_bf16_dtype_o_bf16_dtype_idx_i32"
        "_head_dim_qk_{d}_head_dim_vo_{d}_posenc_0_use_swa_False_use_logits_cap_False_f16qk_False{s}")


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True)


def build_cudart(work: Path) -> Path:
    lib = work / "cudart"
    if (lib / "libcudart.so.12").exists():
        return lib
    lib.mkdir(parents=True, exist_ok=True)
    (lib / "cudart.c").write_text("".join(f"int {s}(void) {{ return 0; }}\n" for s in CUDART_SYMS))
    (lib / "cudart.map").write_text("libcudart.so.12 { global: " + "; ".join(CUDART_SYMS)
                                    + "; local: *; };\n")
    sh("gcc", "-shared", "-fPIC", "-Wl,-soname,libcudart.so.12",
       f"-Wl,--version-script={lib / 'cudart.map'}", "-o", str(lib / "libcudart.so.12"),
       str(lib / "cudart.c"))
    os.symlink("libcudart.so.12", lib / "libcudart.so")
    return lib


def module_name(i: int) -> str:
    return NAME.format(d=64 + i, s="_sm90" if i % 2 else "")


def build_module(ws: Path, cudart: Path, i: int) -> None:
    name = module_name(i)
    d = ws / "cached_ops" / name
    so = d / f"{name}.so"
    if so.exists():
        return
    d.mkdir(parents=True, exist_ok=True)
    uses = CUDART_SYMS if i % 2 else CUDART_SYMS[:-1]
    src = d / "m.c"
    src.write_text("".join(f"extern int {s}(void);\n" for s in uses)
                   + f"int seed_{i}(void) {{ return {i}"
                   + "".join(f" + {s}()" for s in uses) + "; }\n")
    (d / "build.ninja").write_text(f"ninja_required_version = 1.3\nname = {name}\n"
                                   "cuda_home = /usr/local/cuda\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(so), str(src), f"-L{cudart}", "-lcudart"],
                   check=True)
    src.unlink()
    (ws / "cached_ops" / "tmp" / f"{name}.lock").touch()


def build_log(ws: Path, n_modules: int, mb: int) -> None:
    log = ws / "flashinfer_jit.log"
    if log.exists() and log.stat().st_size >= mb << 20:
        return
    with open(log, "wb") as f:
        i = 0
        while f.tell() < mb << 20:
            name = module_name(i % n_modules)
            f.write(f"2026-11-23 05:07:28,595 - INFO - core.py:594 - flashinfer.jit: Building JIT "
                    f"module {name}; this can take several minutes on first use.\n".encode())
            f.write(f"2025-01-01 00:00:00,000 - INFO - flashinfer.jit: Loading JIT ops: {name}\n"
                    f"2025-01-01 00:00:09,000 - INFO - flashinfer.jit: Finished loading JIT ops: "
                    f"{name}\n".encode())
            if i % 10000 == 0:
                f.write(b"\xff\xfe binary \x00 garbage\n")
            i += 1


def build_box(work: Path, n_modules: int, mb: int) -> Path:
    base = work / f"box-{n_modules}"
    ws = base / ".cache" / "flashinfer" / "0.7.2.post1" / "90a"
    (ws / "cached_ops" / "tmp").mkdir(parents=True, exist_ok=True)
    cudart = build_cudart(work)
    t0 = time.time()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as ex:
        list(ex.map(lambda i: build_module(ws, cudart, i), range(n_modules)))
    for extra in list((ws / "cached_ops").iterdir()):
        if extra.name != "tmp" and extra.name not in {module_name(i) for i in range(n_modules)}:
            shutil.rmtree(extra)
    build_log(ws, n_modules, mb)
    print(f"# box: {n_modules} modules, {mb} MB log ready in {time.time() - t0:.1f} s", file=sys.stderr)
    return base


def drop_caches() -> bool:
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def libcuda_stub(work: Path) -> Path:
    """A gcc-built libcuda.so for the link's -lcuda: no driver here, and this machine's
    toolkit has no lib64/stubs (without it cuda-toolkit-unusable rightly fires)."""
    d = work / "stubs"
    if not (d / "libcuda.so").exists():
        d.mkdir(parents=True, exist_ok=True)
        (d / "stub.c").write_text("void cuGetErrorString(void) {}\n")
        sh("gcc", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", str(d / "libcuda.so"),
           str(d / "stub.c"))
    return d


def run_once(base: Path, state: Path) -> tuple:
    env = dict(os.environ, FLASHINFER_WORKSPACE_BASE=str(base), XDG_CACHE_HOME=str(state),
               XDG_STATE_HOME=str(state), NO_COLOR="1", CUDA_HOME="/usr/local/cuda",
               FLASHINFER_EXTRA_LDFLAGS=f"-L{libcuda_stub(base.parent)}")
    t0 = time.perf_counter()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.Popen([sys.executable, "-m", "fidoctor", "diagnose", "--json"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate()
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode not in (0, 1):
        raise SystemExit(f"diagnose failed ({p.returncode}): {err.decode()[-2000:]}")
    doc = json.loads(out)
    CPU.append(ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime)
    return wall, doc


# CPU seconds (user + sys of diagnose and every process it waited for) of each run_once, in
# order: on a shared box the wall time says as much about the neighbours as about fidoctor.
CPU: list = []


def peak_rss_mb(base: Path, state: Path) -> float:
    """Peak RSS of diagnose and all its children, measured in a fresh parent."""
    code = ("import os,resource,subprocess,sys;"
            "subprocess.run([sys.executable,'-m','fidoctor','diagnose','--json'],"
            "stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL);"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    env = dict(os.environ, FLASHINFER_WORKSPACE_BASE=str(base), XDG_CACHE_HOME=str(state),
               XDG_STATE_HOME=str(state), CUDA_HOME="/usr/local/cuda",
               FLASHINFER_EXTRA_LDFLAGS=f"-L{libcuda_stub(base.parent)}")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout
    return int(out.strip()) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--modules", type=int, nargs="+", default=[1000])
    ap.add_argument("--log-mb", type=int, nargs="+", default=[100])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--work", type=Path, default=Path("/tmp/fidoctor-bench"))
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print("cold_dropped: page cache dropped + fidoctor caches empty; first_run: fidoctor caches "
          "empty, files in page cache (the usual case: the server just wrote them)")
    print("modules  log_MB  cold_dropped_s  first_run_s  warm_median_s  warm_min_s  peak_rss_MB"
          "  findings  gather_s(warm)")
    for n in args.modules:
        for mb in args.log_mb:
            base = build_box(args.work, n, mb)
            log = next(base.rglob("flashinfer_jit.log"))
            if log.stat().st_size > (mb + 1) << 20:
                log.unlink()
                build_log(log.parent, n, mb)
            state = args.work / f"state-{n}"
            shutil.rmtree(state, ignore_errors=True)
            dropped = drop_caches()
            cold, _ = run_once(base, state)
            shutil.rmtree(state, ignore_errors=True)
            first, _ = run_once(base, state)
            shutil.rmtree(state, ignore_errors=True)
            rss = peak_rss_mb(base, state)  # peak is highest on a first run (full parse)
            CPU.clear()
            warm_runs = [run_once(base, state) for _ in range(args.repeat)]
            warm = [w for w, _ in warm_runs]
            warm_cpu = statistics.median(CPU)
            doc = warm_runs[-1][1]
            gather = {k: v["elapsed_s"] for k, v in doc["gather"].items()}
            print(f"{n:7d}  {mb:6d}  {cold:14.2f}  {first:11.2f}  {statistics.median(warm):13.2f}"
                  f"  {min(warm):10.2f}  {rss:11.0f}  {len(doc['findings']):8d}  {json.dumps(gather)}"
                  + ("" if dropped else "  (page cache could not be dropped)")
                  + f"  warm_cpu_median_s {warm_cpu:.2f}  load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
