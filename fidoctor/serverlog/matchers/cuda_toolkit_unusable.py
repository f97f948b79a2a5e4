"""cuda-toolkit-unusable in server output: the toolkit lacks what the build needs.

What: the linker's ``/usr/bin/ld: cannot find -lcuda: No such file or directory``
(FlashInfer ≥ 0.4 links ``-lcuda`` from ``$cuda_home/lib64/stubs``), a missing
CUDA header (``fatal error: curand_kernel.h: No such file or directory``,
FlashInfer#4410; ``cuda_fp8.h: 没有那个文件或目录``, SGLang#3830 — the message
after the colon is localized, the header name is not), FlashInfer's ``Could not
find nvcc and default cuda_home='/usr/local/cuda' doesn't exist``
(FlashInfer#1919), ``No such file or directory: 'nvcc'`` (FlashInfer#1781), or a
PATH-style CUDA_HOME in the command line (``-isystem :/usr/local/cuda-12.8``,
vLLM#36077).
Why: a partial toolkit (runtime-only image, conda ``cuda-nvcc`` only, pip-split
headers) or a CUDA_HOME that points at the wrong place.
Fix: a full toolkit (the ``-devel`` image), CUDA_HOME set to it, or
``FLASHINFER_EXTRA_CUDAFLAGS=-I…`` / ``FLASHINFER_EXTRA_LDFLAGS=-L…`` for the
missing piece.
"""

from __future__ import annotations

import re
from typing import Dict, List

from fidoctor.model import Fix
from fidoctor.serverlog.matchers import confirm

ID = "cuda-toolkit-unusable"
SEVERITY = "error"
ANCHOR = "build"
TRIGGERS = ("cannot find -l", "could not find nvcc", "nvcc'", "fatal error:", "nvcc: not found",
            "nvcc: command not found", ":/usr/local/cuda", "-isystem :")
TOOLKIT_HEADER = (r"(?:cuda\w*|curand\w*|cublas\w*|cusparse\w*|cufft\w*|cusolver\w*|nvrtc\w*|"
                  r"nvtx\w*|vector_types|driver_types|math_constants|crt/\w+|cub/[\w/]+|"
                  r"thrust/[\w/]+|nv/[\w/]+|cuda/[\w/]+|cooperative_groups\w*)\.(?:h|hpp|cuh)")
PATTERNS = [
    re.compile(r"cannot find -l(?P<lib>cuda|cudart|cudart_static|cublas\w*|nvrtc)\b"),
    re.compile(r"fatal error: (?P<header>" + TOOLKIT_HEADER + r"): "),
    # FlashInfer's own words (jit/cpp_ext.py get_cuda_path): evidence without a build anchor
    re.compile(r"(?P<fi>(?P<nvcc>Could not find nvcc))(?: and default cuda_home='(?P<path>[^']*)')?"),
    re.compile(r"No such file or directory: '(?P<nvcc>(?:\S*/)?nvcc)'"),
    re.compile(r"(?P<nvcc>\S*nvcc): (?:command )?not found"),
    re.compile(r"(?:-isystem |-I)(?P<malformed>:/\S+)"),
]


def title(d: Dict[str, str]) -> str:
    if d.get("lib"):
        return (f"the link step finds no lib{d['lib']}.so (-l{d['lib']}): nothing in the "
                "toolkit's lib64, lib64/stubs or the -L dirs")
    if d.get("header"):
        return f"the CUDA header {d['header']} is missing from the toolkit the build uses"
    if d.get("malformed"):
        return f"CUDA_HOME is malformed: the build uses {d['malformed']} (a PATH-style value)"
    return "the build finds no nvcc (CUDA_HOME, PATH and /usr/local/cuda)"


def fixes(d: Dict[str, str]) -> List[Fix]:
    if d.get("lib") == "cuda":
        cmds = ["ls $CUDA_HOME/lib64/stubs/libcuda.so   # the toolkit's stub, for the link",
                "export FLASHINFER_EXTRA_LDFLAGS=-L<dir with libcuda.so>"]
        return [Fix("Link against the toolkit's stub libcuda (install the full toolkit, or point "
                    "FLASHINFER_EXTRA_LDFLAGS at a dir holding libcuda.so)", cmds + [confirm()],
                    safety="safe")]
    if d.get("header"):
        return [Fix(f"Install the full CUDA toolkit, or add the dir holding {d['header']} with "
                    "FLASHINFER_EXTRA_CUDAFLAGS=-I<dir>",
                    [f"find / -name {d['header'].rsplit('/', 1)[-1]} 2>/dev/null | head",
                     confirm()], safety="safe")]
    return [Fix("Set CUDA_HOME to a full toolkit (the dir holding bin/nvcc), identically for "
                "every launcher", ["export CUDA_HOME=/usr/local/cuda", confirm()], safety="safe")]
