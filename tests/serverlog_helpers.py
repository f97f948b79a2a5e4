"""Real server output for the log tests, captured once and cached.

Every capture is a real Python process of the cached target venv (CPU torch +
flashinfer-python 0.7.2.post1, ``warmup_helpers.target_venv``) whose stdout and
stderr are read line by line as they are printed, each line stamped with the
wall-clock time it arrived (so the serving-stack wrappers below carry real
times). The failures are FlashInfer's own, from its real build path
(``gen_jit_spec`` / ``gen_*_module`` → ``build_and_load`` → ninja → nvcc):

- ``lcuda``: a small real module linked without any libcuda (``cannot find -lcuda``)
- ``header``: the real FA3 prefill module without curand headers (``curand_kernel.h``)
- ``killed``: the real decode module whose cicc is SIGKILLed (``FAILED: [code=137]``)
- ``readonly``: ``import flashinfer`` with its workspace on a tmpfs remounted ro
- ``undefined``: a cached module loaded as FlashInfer 0.2-0.3 load theirs
  (``torch.ops.load_library``, binding now) after pip's real libcudart 12.4.127: the
  real loader's ``undefined symbol``. (0.7's ``tvm_ffi.load_module`` binds lazily, so
  the same module fails there only at its first call.)
- ``pyspy``: ``py-spy dump`` of a real FlashInfer build waiting on a JIT lock that
  another process holds (a real ``flock``)
- ``slow``: the real decode module compiled and loaded (a healthy cold build)
- ``oom``: a real CPU out-of-memory raised inside FlashInfer's ``_get_cache_buf``
  (an inference failure that mentions flashinfer and has nothing to do with the JIT)
- ``syntax``: a module whose source has a real compile error (no finding id names it)
- ``flag11``: FlashInfer 0.7.2's real build with NVIDIA's CUDA 11.8 nvcc
  (``toolchain_helpers.cuda118``): nvcc rejects ``--compress-mode=size`` first
- ``gcc12`` / ``arch90a``: since 0.7.2 never gets past that flag with 11.8, the same
  nvcc run by a real ninja from a ``cached_ops/<module>/build.ninja`` holding
  FlashInfer's compile line without it: with this box's gcc 12 (``unsupported GNU
  version!``), and with gcc-11 asked for ``compute_90a``. Real ninja, real nvcc;
  FlashInfer's Python wrapper around them is what is missing.

The wrappers re-print those lines exactly as the serving stacks print a
child's or a logger's lines; the format strings are quoted from their source.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from warmup_helpers import _locked, build_env, cache_root, hold_flock, kill_and_wait, target_venv

VERSION = "v1"
Line = Tuple[float, str]  # (arrival time, text without newline)

TINY = ('#include <cuda_runtime.h>\n__global__ void k(int *x) { x[0] = 1; }\n'
        'extern "C" int fidoctor_launch(int *x) { k<<<1, 1>>>(x); return 0; }\n')
TINY_SCRIPT = """
import pathlib, sys
from flashinfer.jit import gen_jit_spec
src = pathlib.Path(sys.argv[1])
src.write_text(sys.argv[3])
spec = gen_jit_spec(sys.argv[2], [src])
spec.build_and_load()
print("loaded OK", flush=True)
"""
FA3_SCRIPT = """
import torch
from flashinfer.prefill import gen_single_prefill_module
f16 = torch.float16
gen_single_prefill_module("fa3", f16, f16, f16, 64, 64, 0, False, False, False).build_and_load()
print("loaded OK", flush=True)
"""
DECODE_SCRIPT = """
import time, torch
from flashinfer.decode import gen_single_decode_module
f16 = torch.float16
t = time.time()
gen_single_decode_module(f16, f16, f16, 64, 64, 0, False, False).build_and_load()
print(f"loaded OK after {time.time() - t:.1f} s", flush=True)
"""
UNDEFINED_SCRIPT = """
import ctypes, sys
ctypes.CDLL(sys.argv[1], ctypes.RTLD_GLOBAL)   # pip's libcudart.so.12, as torch maps it first
import torch
torch.ops.load_library(sys.argv[2])            # FlashInfer 0.2-0.3's loader (RTLD_NOW)
"""
OOM_SCRIPT = """
import torch, flashinfer
from flashinfer.utils import _get_cache_buf
print("flashinfer", flashinfer.__version__, flush=True)
_get_cache_buf("fidoctor_workspace", 1 << 50, torch.device("cpu"))
"""


def captures_dir() -> Path:
    d = cache_root() / f"serverlog-{VERSION}"
    d.mkdir(parents=True, exist_ok=True)
    return d


def run_capture(argv: List[str], env: Dict[str, str], timeout: float = 600,
                during: Optional[Callable[[subprocess.Popen], None]] = None) -> List[Line]:
    """Run a real process, read its merged stdout/stderr line by line with arrival times."""
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         start_new_session=True)
    out: List[Line] = []
    try:
        if during is not None:
            during(p)
        assert p.stdout is not None
        deadline = time.time() + timeout
        for raw in iter(p.stdout.readline, b""):
            out.append((time.time(), raw.decode("utf-8", "replace").rstrip("\n")))
            if time.time() > deadline:
                break
        p.wait(timeout=30)
    finally:
        kill_and_wait(p)
    return out


def _cached(name: str, make: Callable[[Path], List[Line]]) -> List[Line]:
    path = captures_dir() / f"{name}.jsonl"
    if path.exists():
        return [tuple(x) for x in map(json.loads, path.read_text().splitlines())]  # type: ignore
    with _locked(captures_dir() / f"{name}.lock"):
        if path.exists():
            return _cached(name, make)
        work = captures_dir() / f"work-{name}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        lines = make(work)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(list(x)) + "\n" for x in lines))
        os.replace(tmp, path)
        shutil.rmtree(work, ignore_errors=True)
        return lines


def _env(work: Path, **extra: str) -> Dict[str, str]:
    py = target_venv()
    env = build_env(py.parent.parent, work / "base", extra=extra)
    env["MAX_JOBS"] = env.get("MAX_JOBS", "1")
    return env


def _descendants(root: int) -> List[Tuple[int, str]]:
    kids: Dict[int, List[Tuple[int, str]]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        name = s[s.index("(") + 1:s.rindex(")")]
        ppid = int(s.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append((int(d), name))
    out, todo = [], [root]
    while todo:
        for pid, name in kids.get(todo.pop(), []):
            out.append((pid, name))
            todo.append(pid)
    return out


def capture(name: str) -> List[Line]:
    """One real capture by name (see the module docstring), cached."""
    return _cached(name, globals()[f"_make_{name}"])


def _make_lcuda(work: Path) -> List[Line]:
    env = _env(work)
    env.pop("FLASHINFER_EXTRA_LDFLAGS")  # no stub libcuda: the link step fails for real
    return run_capture([str(target_venv()), "-c", TINY_SCRIPT, str(work / "t.cu"),
                        "fidoctor_tiny_link", TINY], env)


def _make_header(work: Path) -> List[Line]:
    return run_capture([str(target_venv()), "-c", FA3_SCRIPT], _env(work))


def _make_killed(work: Path) -> List[Line]:
    def kill_cicc(p: subprocess.Popen) -> None:
        deadline = time.time() + 300
        while p.poll() is None and time.time() < deadline:
            for pid, n in _descendants(p.pid):
                if n == "cicc":
                    try:
                        os.kill(pid, 9)
                        return
                    except ProcessLookupError:
                        pass
            time.sleep(0.02)

    import threading

    def during(p: subprocess.Popen) -> None:
        threading.Thread(target=kill_cicc, args=(p,), daemon=True).start()

    return run_capture([str(target_venv()), "-c", DECODE_SCRIPT], _env(work), during=during)


def _make_readonly(work: Path) -> List[Line]:
    mnt = work / "ro"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        env = _env(work)
        env["FLASHINFER_WORKSPACE_BASE"] = str(mnt)
        return run_capture([str(target_venv()), "-c", "import flashinfer"], env)
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def _make_undefined(work: Path) -> List[Line]:
    from cudart_helpers import WHEEL_12_4, WHEEL_12_9, extract_cudart, gcc_so

    old = extract_cudart(WHEEL_12_4, work / "libcudart.so.12")
    new_dir = work / "cuda-12.9" / "lib64"
    new_dir.mkdir(parents=True)
    new = extract_cudart(WHEEL_12_9, new_dir / "libcudart.so.12")
    os.symlink(new.name, new_dir / "libcudart.so")
    name = "fidoctor_tma_sm90"
    mod = work / "base" / ".cache" / "flashinfer" / "0.7.2.post1" / "90a" / "cached_ops" / name
    mod.mkdir(parents=True)
    gcc_so(mod / f"{name}.so",
           "int cudaGetDriverEntryPointByVersion(const char *, void **, unsigned int,\n"
           "    unsigned long long, int *);\n"
           "int tma_init(void) { void *fn = 0; int st = 0;\n"
           "  return cudaGetDriverEntryPointByVersion(\"cuTensorMapEncodeTiled\", &fn, 12000, 0,"
           " &st); }\n", [f"-L{new_dir}", "-lcudart"])
    return run_capture([str(target_venv()), "-c", UNDEFINED_SCRIPT, str(old),
                        str(mod / f"{name}.so")], _env(work))


def py_spy() -> Path:
    """The real py-spy binary from PyPI, installed once into the test cache."""
    d = cache_root() / "py-spy"
    exe = d / "bin" / "py-spy"
    if exe.exists():
        return exe
    with _locked(cache_root() / "py-spy.lock"):
        if not exe.exists():
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--prefix", str(d),
                            "--no-warn-script-location", "py-spy"], check=True,
                           capture_output=True, timeout=300)
    return exe


def _make_pyspy(work: Path) -> List[Line]:
    name = "fidoctor_tiny_wait"
    env = _env(work)
    lock = (work / "base" / ".cache" / "flashinfer" / "0.7.2.post1" / "90a" / "cached_ops" / "tmp"
            / f"{name}.lock")
    holder = hold_flock(lock)
    waiter = subprocess.Popen([str(target_venv()), "-c", TINY_SCRIPT, str(work / "t.cu"), name,
                               TINY], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        deadline = time.time() + 120
        dump: List[Line] = []
        while time.time() < deadline:  # until the stack shows the lock wait
            time.sleep(1.0)
            dump = run_capture([str(py_spy()), "dump", "--pid", str(waiter.pid)], dict(os.environ),
                               timeout=60)
            if any("filelock" in t for _, t in dump):
                break
        return dump
    finally:
        kill_and_wait(waiter)
        kill_and_wait(holder)


def _make_slow(work: Path) -> List[Line]:
    return run_capture([str(target_venv()), "-c", DECODE_SCRIPT], _env(work))


def _make_oom(work: Path) -> List[Line]:
    return run_capture([str(target_venv()), "-c", OOM_SCRIPT], _env(work))


# -- the serving stacks' formats -------------------------------------------------------------

VLLM_FORMAT = "%(levelname)s %(asctime)s [%(fileinfo)s:%(lineno)d] %(message)s"  # vllm/logger.py
VLLM_DATE = "%m-%d %H:%M:%S"
SGLANG_FORMAT = "[%(asctime)s{prefix}] %(message)s"  # sglang/srt/utils.py configure_logger
SGLANG_DATE = "%Y-%m-%d %H:%M:%S"


def _fmt(epoch: float, datefmt: str) -> str:
    return time.strftime(datefmt, time.localtime(epoch))


def is_traceback_block(lines: List[Line]) -> List[List[Line]]:
    """Split into log records: a traceback (from its first line to the end) is one record,
    as ``logger.exception`` prints it; every other line is a record of its own."""
    records: List[List[Line]] = []
    for i, (t, text) in enumerate(lines):
        if text.startswith("Traceback (most recent call last)"):
            records.append(lines[i:])
            return records
        records.append([(t, text)])
    return records


def vllm_worker(lines: List[Line], worker: str = "Worker_TP0", pid: int = 451,
                fileinfo: str = "multiproc_executor.py", lineno: int = 671) -> List[str]:
    """A vLLM worker: FlashInfer's own lines go through ``_add_prefix`` (``({worker} pid={pid}) ``,
    NO_COLOR); the traceback is logged by ``logger.exception`` with vLLM's ``_FORMAT``, and
    ``NewLineFormatter`` repeats the prefix after ``\\r\\n`` on each of its lines. The harness's
    ``loaded OK`` line stands where vLLM logs its next step (an INFO record)."""
    out: List[str] = []
    wp = f"({worker} pid={pid}) "
    for rec in is_traceback_block(lines):
        if rec[0][1].startswith("Traceback") and len(rec) > 1:
            head = f"ERROR {_fmt(rec[0][0], VLLM_DATE)} [{fileinfo}:{lineno}] "
            msg = "WorkerProc failed to start.\n" + "\n".join(t for _, t in rec)
            text = head + msg.replace("\n", "\r\n" + head)
            out += [wp + piece for piece in text.split("\n")]
        elif rec[0][1].startswith("loaded OK"):
            t, text = rec[0]
            out.append(wp + f"INFO {_fmt(t, VLLM_DATE)} [gpu_model_runner.py:2068] {text}")
        else:
            out += [wp + t for _, t in rec]
    return out


def sglang_rank(lines: List[Line], prefix: str = " TP0") -> List[str]:
    """SGLang's scheduler: ``configure_logger`` prefixes the first line of a record only;
    a traceback is logged as ``Scheduler hit an exception: {traceback}``."""
    out: List[str] = []
    for rec in is_traceback_block(lines):
        t = rec[0][0]
        head = f"[{_fmt(t, SGLANG_DATE)}{prefix}] "
        if rec[0][1].startswith("Traceback") and len(rec) > 1:
            out.append(head + "Scheduler hit an exception: " + rec[0][1])
            out += [x for _, x in rec[1:]]
        else:
            out += [head + x for _, x in rec]
    return out


def torch_rank(lines: List[Line], rank: int = 0) -> List[str]:
    """torch.distributed elastic's per-line ``[rank0]: `` prefix."""
    return [f"[rank{rank}]: {t}" for _, t in lines]


def ray_worker(lines: List[str], pid: int = 231741, ip: str = "10.0.0.2") -> List[str]:
    """Ray's log monitor around a vLLM worker line, dedup suffix on a repeated line."""
    out = []
    for i, t in enumerate(lines):
        line = f"(RayWorkerWrapper pid={pid}, ip={ip}) {t}"
        if i == 1:
            line += " [repeated 3x across cluster] (Ray deduplicates logs by default. Set " \
                    "RAY_DEDUP_LOGS=0 to disable log deduplication, or see https://docs.ray.io/" \
                    "en/master/ray-observability/user-guides/configure-logging.html#log-" \
                    "deduplication for more options.)"
        out.append(line)
    return out


def kubectl(lines: List[Line], formatted: List[str]) -> List[str]:
    """``kubectl logs --timestamps``: RFC 3339 with nanoseconds, UTC, then a space."""
    out = []
    for (t, _), text in zip(lines, formatted):
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"
        out.append(f"{stamp} {text}")
    return out


def interleave(streams: List[List[str]], chunk: int = 3) -> List[str]:
    """Ranks writing at once: ``chunk`` lines of each in turn (a write's worth)."""
    out: List[str] = []
    pos = [0] * len(streams)
    while any(p < len(s) for p, s in zip(pos, streams)):
        for i, s in enumerate(streams):
            out += s[pos[i]:pos[i] + chunk]
            pos[i] += chunk
    return out


def hard_wrap(lines: List[str], width: int = 100) -> List[str]:
    """A terminal that wraps at ``width`` columns, copied as it shows."""
    out: List[str] = []
    for ln in lines:
        while len(ln) > width:
            out.append(ln[:width])
            ln = ln[width:]
        out.append(ln)
    return out


def write_log(path: Path, lines: List[str], gz: bool = False, ansi: bool = False,
              newline: str = "\n") -> Path:
    text = "".join((f"\x1b[1;36m{ln[:1]}\x1b[0;0m{ln[1:]}" if ansi and ln else ln) + newline
                   for ln in lines)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def plain(lines: List[Line]) -> List[str]:
    return [t for _, t in lines]


def line_of(lines: List[str], needle: str) -> int:
    """1-based number of the first line containing ``needle``."""
    return next(i for i, t in enumerate(lines, 1) if needle in t)


def _nvcc118_env(work: Path, **extra: str) -> Dict[str, str]:
    from toolchain_helpers import cuda118

    tk = cuda118()
    env = _env(work, **extra)
    env["CUDA_HOME"] = str(tk)
    env["PATH"] = f"{tk}/bin:{env['PATH']}"
    return env


def _make_flag11(work: Path) -> List[Line]:
    env = _nvcc118_env(work, FLASHINFER_CUDA_ARCH_LIST="8.0")
    return run_capture([str(target_venv()), "-c", TINY_SCRIPT, str(work / "t.cu"),
                        "fidoctor_tiny_cu118", TINY], env)


def _ninja_nvcc(work: Path, gencode: str, cc: Optional[str]) -> List[Line]:
    from toolchain_helpers import cuda118

    tk = cuda118()
    name = "fidoctor_tiny_cu118"
    mod = work / "base" / ".cache" / "flashinfer" / "0.7.2.post1" / "90a" / "cached_ops" / name
    mod.mkdir(parents=True)
    (mod / "t.cu").write_text(TINY)
    ccbin = f"-ccbin {cc} " if cc else ""
    (mod / "build.ninja").write_text(
        f"ninja_required_version = 1.3\nname = {name}\ncuda_home = {tk}\n"
        f"nvcc = $cuda_home/bin/nvcc\n"
        f"rule cuda_compile\n  command = $nvcc {ccbin}--generate-dependencies-with-compile "
        f"-MF $out.d -std=c++17 {gencode} --compiler-options=-fPIC -c $in -o $out\n"
        f"  depfile = $out.d\n  deps = gcc\n"
        f"build {mod}/t.cuda.o: cuda_compile {mod}/t.cu\n")
    ninja = target_venv().parent / "ninja"
    return run_capture([str(ninja), "-v", "-C", str(mod), "-f", str(mod / "build.ninja")],
                       _nvcc118_env(work))


def _make_gcc12(work: Path) -> List[Line]:
    return _ninja_nvcc(work, "-gencode=arch=compute_80,code=sm_80", None)


def _make_arch90a(work: Path) -> List[Line]:
    from toolchain_helpers import gcc11

    return _ninja_nvcc(work, "-gencode=arch=compute_90a,code=sm_90a", str(gcc11() / "gcc-11"))


def _make_syntax(work: Path) -> List[Line]:
    """A module whose source does not compile: a cause fidoctor has no id for."""
    bad = TINY.replace("x[0] = 1;", "x[0] = undeclared_in_fidoctor_test;")
    return run_capture([str(target_venv()), "-c", TINY_SCRIPT, str(work / "t.cu"),
                        "fidoctor_tiny_syntax", bad], _env(work))

