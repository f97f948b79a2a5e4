"""Real FlashInfer ``build.ninja`` files, built into a real ninja state without nvcc's minutes.

``flashinfer_module`` asks the cached target venv's FlashInfer 0.7.2.post1 to
write a module's ``build.ninja`` (its own ``JitSpec.write_ninja``, with the
``CUDA_HOME`` string given), then runs the real ``/usr/bin/ninja`` on it.
The one stand-in: ``FLASHINFER_NVCC_LAUNCHER`` (FlashInfer's own ccache-style
hook) and ``CXX`` point at a launcher that writes the ``-o`` output and the
``-MF`` depfile instead of compiling for tens of seconds per object; the
file and the commands ninja records are FlashInfer's own. ninja's
``.ninja_log``/``.ninja_deps`` are real, so ``ninja -n -d explain`` judges
them as it would after a real build.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Dict, Optional

from warmup_helpers import build_env, target_venv

LAUNCHER = r"""#!/usr/bin/env python3
import sys
args = sys.argv[1:]
def after(flag):
    return args[args.index(flag) + 1] if flag in args else None
out, dep, src = after("-o"), after("-MF"), after("-c")
if out:
    open(out, "wb").close()
if dep:
    with open(dep, "w") as f:
        f.write(f"{out}: {src or ''}\n")
"""

GEN = """
import sys, torch
from flashinfer.jit import gen_single_decode_module
spec = gen_single_decode_module(torch.float16, torch.float16, torch.float16, int(sys.argv[1]),
                                int(sys.argv[1]), 0, False, False)
spec.write_ninja()
print(spec.ninja_path)
"""


def launcher(d: Path) -> Path:
    p = d / "launcher"
    p.write_text(LAUNCHER)
    p.chmod(0o755)
    return p


def venv_ninja() -> str:
    """The ninja FlashInfer runs in the target venv (its log format differs from 1.11's)."""
    return str(target_venv().parent / "ninja")


def fi_env(base: Path, cuda_home: str, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The target's environment; what FlashInfer writes into build.ninja comes only from
    ``extra`` (CC, CXX, FLASHINFER_NVCC_THREADS of the machine running the tests are dropped)."""
    env = build_env(target_venv().parent.parent, base, cuda_home=cuda_home)
    for k in ("CC", "CXX", "FLASHINFER_NVCC_THREADS", "FLASHINFER_EXTRA_CUDAFLAGS",
              "FLASHINFER_JIT_VERBOSE", "FLASHINFER_JIT_DEBUG"):
        env.pop(k, None)
    env.update(extra or {})
    return env


def module_env(base: Path, cuda_home: str, **extra: str) -> Dict[str, str]:
    """The target's environment for modules built by ``flashinfer_module`` (same launcher)."""
    lau = base / "launcher"
    return fi_env(base, cuda_home, {"FLASHINFER_NVCC_LAUNCHER": str(lau), "CXX": str(lau),
                                    **extra})


def flashinfer_module(base: Path, cuda_home: str = "/usr/local/cuda", head_dim: int = 64,
                      build: bool = True, launch: bool = True) -> Path:
    """A real 0.7.2.post1 decode module dir under ``base``; built by ninja if ``build``.

    ``launch=False`` writes it for the real nvcc and c++ (no launcher; build it yourself)."""
    py = target_venv()
    base.mkdir(parents=True, exist_ok=True)
    launcher(base)
    env = module_env(base, cuda_home) if launch else fi_env(base, cuda_home)
    r = subprocess.run([str(py), "-c", GEN, str(head_dim)], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    ninja_file = Path(r.stdout.strip().splitlines()[-1])
    mod = ninja_file.parent
    if build:
        r2 = subprocess.run([venv_ninja(), "-C", str(mod), "-f", str(ninja_file)], env=env,
                            capture_output=True, text=True, timeout=60)
        assert r2.returncode == 0, r2.stdout[-2000:] + r2.stderr[-2000:]
    return mod
