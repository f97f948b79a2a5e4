"""A server stand-in for the live-watch tests and bench: FlashInfer's real JIT path.

It is a Python in the cached target venv (CPU torch + flashinfer-python 0.7.2.post1,
``warmup_helpers.target_venv``) that does what a serving stack does on its first request:
import torch and FlashInfer, ask a generator for a module (``gen_single_decode_module``,
the call SGLang's and vLLM's FlashInfer backends make through the wrappers) and
``build_and_load()`` it — FlashInfer's own lock, ninja, nvcc for sm_90a. It then says it
serves and waits. It is a stand-in only for the parts a GPU-less box cannot run (no model,
no HTTP); the build is the real one.

argv: ``WHEN THEN``: WHEN ``now`` builds at start, ``late`` says it serves first and builds
3 s later (a new shape at request time); THEN ``serve`` waits for a signal afterwards, a
number exits with that code. SIGINT/SIGTERM print ``server: got signal N`` and exit 128+N.
"""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path
from typing import Dict, List, Optional

from warmup_helpers import build_env, target_venv

SERVER = textwrap.dedent('''
    import os, signal, sys, time
    when, then = sys.argv[1], sys.argv[2]
    def on(sig, frame):
        print(f"server: got signal {sig}", flush=True)
        os._exit(128 + sig)
    signal.signal(signal.SIGINT, on)
    signal.signal(signal.SIGTERM, on)
    print("server: starting", flush=True)
    import torch
    from flashinfer.jit import gen_single_decode_module
    hd = int(os.environ.get("STANDIN_HEAD_DIM", "64"))
    def build():
        spec = gen_single_decode_module(torch.float16, torch.float16, torch.float16, hd, hd,
                                        0, False, False)
        print(f"server: loading {spec.name}", flush=True)
        spec.build_and_load()
        print("server: module loaded", flush=True)
    if when == "now":
        build()
    print("server: ready", flush=True)
    if when == "late":
        time.sleep(3)
        build()
    if then != "serve":
        sys.exit(int(then))
    while True:
        time.sleep(1)
''')


def server_script(tmp: Path) -> Path:
    p = tmp / "standin_server.py"
    p.write_text(SERVER)
    return p


def standin(tmp: Path, when: str = "now", then: object = "serve") -> List[str]:
    """argv of the stand-in server (the target venv's interpreter)."""
    return [str(target_venv()), str(server_script(tmp)), when, str(then)]


def standin_env(base: Path, extra: Optional[Dict[str, str]] = None,
                cuda_home: Optional[str] = None) -> Dict[str, str]:
    py = target_venv()
    kw = {"cuda_home": cuda_home} if cuda_home else {}
    env = build_env(py.parent.parent, base, extra=extra, **kw)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def module_name(hd: int = 64) -> str:
    return (f"single_decode_with_kv_cache_dtype_q_f16_dtype_kv_f16_dtype_o_f16_head_dim_qk_{hd}"
            f"_head_dim_vo_{hd}_posenc_0_use_swa_False_use_logits_cap_False")


def workspace(base: Path) -> Path:
    return base / ".cache" / "flashinfer" / "0.7.2.post1" / "90a"


def fidoctor_argv(*args: str) -> List[str]:
    return [sys.executable, "-m", "fidoctor", *args]


def events_of(path: Path) -> List[dict]:
    import json

    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def cpu_count() -> int:
    return os.cpu_count() or 1
