"""Fixture boxes built for real in the test session.

A *box* is a throwaway FlashInfer workspace base (``FLASHINFER_WORKSPACE_BASE``)
with real directory trees in each version's layout, logs in each real format,
and ``.so`` files compiled by gcc. Tests gather from it exactly as fidoctor
does on a user's machine; nothing is patched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from fidoctor.diagnosis import diagnose
from fidoctor.snapshot.context import build_context
from fidoctor.snapshot.runner import gather_snapshot

DECODE = ("single_decode_with_kv_cache_dtype_q_f16_dtype_kv_f16_dtype_o_f16_head_dim_qk_128"
          "_head_dim_vo_128_posenc_0_use_swa_False_use_logits_cap_False")
FA3 = ("single_prefill_with_kv_cache_dtype_q_bf16_dtype_kv_bf16_dtype_o_bf16_head_dim_qk_128"
       "_head_dim_vo_128_posenc_0_use_swa_False_use_logits_cap_False_f16qk_False_sm90")
FA2 = FA3[: -len("_sm90")]

# Every gatherer result crossing the runner's pipe (marshal) is checked to survive a JSON
# round trip unchanged, in this process and in every CLI run a test starts.
os.environ.setdefault("FIDOCTOR_CHECK_WIRE", "1")


def ts(epoch: float) -> str:
    """A FlashInfer log timestamp (local time, ``YYYY-MM-DD HH:MM:SS,mmm``)."""
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch)) + ",123"


def log_line(fmt: str, event: str, name: str, epoch: float) -> str:
    """One real-format log line. fmt: 'old' (0.2.0–0.2.11) or 'new' (0.2.12+/0.7)."""
    msg = {
        "loading": f"Loading JIT ops: {name}",
        "finished": f"Finished loading JIT ops: {name}",
        "building": f"Building JIT module {name}; this can take several minutes on first use.",
    }[event]
    if fmt == "old":
        return f"{ts(epoch)} - INFO - flashinfer.jit: {msg}\n"
    return f"{ts(epoch)} - INFO - core.py:594 - flashinfer.jit: {msg}\n"


@pytest.fixture(scope="session")
def built_so(tmp_path_factory) -> Path:
    """A real shared object built by gcc (the stand-in for a compiled module)."""
    d = tmp_path_factory.mktemp("elf")
    src = d / "mod.c"
    src.write_text("int fidoctor_fixture(int x) { return x + 1; }\n")
    out = d / "mod.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(out), str(src)], check=True)
    return out


class Box:
    """A FlashInfer workspace base under construction."""

    def __init__(self, base: Path, so: Path) -> None:
        self.base = base
        self.root = base / ".cache" / "flashinfer"
        self._so = so

    def workspace(self, version: Optional[str] = "0.7.2.post1", arch: Optional[str] = "90a") -> Path:
        ws = self.root
        if version:
            ws = ws / version
        if arch:
            ws = ws / arch
        (ws / "cached_ops" / "tmp").mkdir(parents=True, exist_ok=True)
        return ws

    def module(self, ws: Path, name: str, so: str = "good", objects: int = 3,
               depfiles: int = 0, lock: bool = True, ninja_lock: bool = False) -> Path:
        """so: good | missing | empty | text | truncated."""
        d = ws / "cached_ops" / name
        d.mkdir(parents=True, exist_ok=True)
        edges = "".join(
            f"build {d}/{name}_k{i}.cuda.o: cuda_compile {ws}/generated/{name}/k{i}.cu\n"
            for i in range(max(objects, 1))
        )
        (d / "build.ninja").write_text(
            f"ninja_required_version = 1.3\nname = {name}\ncuda_home = /usr/local/cuda\n"
            f"cxx = c++\nnvcc = $cuda_home/bin/nvcc\n\n{edges}"
        )
        for i in range(objects):
            (d / f"{name}_k{i}.cuda.o").write_bytes(b"\x7fELF" + bytes(60))
        for i in range(depfiles):
            (d / f"{name}_k{i}.cuda.o.d").write_text("x.o: x.cu\n")
        if ninja_lock:
            (d / ".ninja_lock").write_bytes(b"")
        so_path = d / f"{name}.so"
        if so == "good":
            shutil.copy(self._so, so_path)
        elif so == "empty":
            so_path.write_bytes(b"")
        elif so == "text":
            so_path.write_text("this is not an ELF file\n")
        elif so == "truncated":
            so_path.write_bytes(self._so.read_bytes()[:200])
        if lock:
            (ws / "cached_ops" / "tmp" / f"{name}.lock").write_bytes(b"")
        return d

    def log(self, ws: Path, lines: List[str]) -> Path:
        p = ws / "flashinfer_jit.log"
        with open(p, "a") as f:
            f.writelines(lines)
        return p

    def env(self, **extra: str) -> Dict[str, str]:
        env = dict(os.environ)
        env["FLASHINFER_WORKSPACE_BASE"] = str(self.base)
        env["NO_COLOR"] = "1"
        # A complete toolkit: without it FlashInfer's `which nvcc` finds the /usr/local/bin
        # wrapper, cuda_home=/usr/local, and cuda-toolkit-unusable (rightly) fires.
        env.setdefault("CUDA_HOME", "/usr/local/cuda")
        # No driver here, and this toolkit has no lib64/stubs: the link's -lcuda needs a stub
        # (as build hosts without a GPU use), or cuda-toolkit-unusable (rightly) fires.
        from warmup_helpers import stub_libcuda

        env.setdefault("FLASHINFER_EXTRA_LDFLAGS", f"-L{stub_libcuda()}")
        env.update(extra)
        return env


@pytest.fixture
def procs(tmp_path):
    """Every process a test starts, killed by pid afterwards; none may survive.

    The test process becomes a child subreaper so orphans (a SIGKILLed server's
    ninja) are reparented to it, not to pid 1, and can be reaped and counted.
    """
    from proc_helpers import Procs, set_subreaper

    assert set_subreaper(True), "prctl(PR_SET_CHILD_SUBREAPER) failed"
    pr = Procs(tmp_path)
    try:
        yield pr
    finally:
        survivors = pr.kill_all()
        set_subreaper(False)
        assert survivors == [], f"processes survived the test: {survivors}"


@pytest.fixture
def memcg(procs):
    """A real 200 MB memory cgroup below the test's own (tests/memcg_helpers.py)."""
    from memcg_helpers import memcg_dir

    yield from memcg_dir(procs)


@pytest.fixture
def box(tmp_path, built_so) -> Box:
    base = tmp_path / "base"
    base.mkdir()
    return Box(base, built_so)


def snapshot_of(box: Box, **kw):
    """Gather a real snapshot of ``box`` (fidoctor's own interpreter as the target)."""
    ctx = build_context(python=kw.pop("python", sys.executable), env=box.env(**kw))
    return gather_snapshot(ctx)


def diagnose_box(box: Box, **kw):
    return diagnose(snapshot_of(box, **kw))


def ids(diag) -> List[str]:
    return sorted(f.id for f in diag.findings)


def run_cli(args: List[str], env: Optional[Dict[str, str]] = None, timeout: float = 120,
            input_text: Optional[str] = None) -> subprocess.CompletedProcess:
    """Run the real CLI as a child process (``python -m fidoctor``)."""
    return subprocess.run(
        [sys.executable, "-m", "fidoctor", *args],
        env=env, capture_output=True, text=True, timeout=timeout, input=input_text,
    )


def write_script(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body))
    path.chmod(0o755)
    return path
