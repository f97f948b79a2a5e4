"""The target's ``FLASHINFER_JIT_BUILD_LOG`` (FlashInfer 0.7.4+), when its environment names one.

Data contract (``data``; never renamed): ``path`` (None when the variable is
unset), and when set: ``size``, ``complete`` (False when only the last 64 MiB
were read), ``records``, ``bad_lines``, ``modules`` → {name: {builds,
compiles (seconds of real compiles, newest last, at most 20), noop_builds,
toolchain, last_time}}. See ``fidoctor.flashinfer.buildlog``.
"""

from __future__ import annotations

from typing import Any, Dict

from fidoctor.flashinfer.buildlog import parse

NAME = "jit_build_log"
BUDGET_S = 5.0
ORDER = 4


def gather(ctx, done) -> Dict[str, Any]:
    path = ctx.env.get("FLASHINFER_JIT_BUILD_LOG")
    if not path:
        return {"path": None}
    from fidoctor.mounts import kernel_fs

    kernel = kernel_fs(path)
    if kernel:  # the server's environment names /proc/kmsg or the like: never read it
        return {"path": path, "error": f"a file of the kernel's {kernel} interface, not a build log"}
    try:
        return parse(path)
    except FileNotFoundError:
        return {"path": path, "error": "no such file (no build has finished since it was set)"}
    except OSError as e:
        return {"path": path, "error": e.strerror or str(e)}
