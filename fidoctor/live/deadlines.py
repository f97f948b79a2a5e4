"""The clocks that will kill this start, read from the server's command line and environment.

What each serving stack does (read in its source, 2026-11):

* vLLM ``VLLM_ENGINE_READY_TIMEOUT_S`` (``vllm/envs.py``, default 600): the front end waits
  that long for the engine core's READY (``wait_for_engine_startup``,
  ``gather_actual_addresses``); model load, KV-cache profiling and CUDA-graph capture, and so
  every FlashInfer JIT build they trigger, run inside it. Clock: the server's start.
* vLLM ``VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS`` (default 300): the multiprocess executor's
  ``collective_rpc("execute_model", timeout=…)`` (TP/PP > 1): a build inside one forward step
  (a new shape at request time) is cut off after it. Clock: the step's start.
* SGLang ``--watchdog-timeout`` (``server_args.py``, default 300): ``ProcessWatchdog`` sends
  SIGQUIT to the server when one forward batch makes no progress for that long — a JIT build
  inside the first prefill is exactly that. ``--soft-watchdog-timeout`` only logs.
* SGLang's warmup request (``http_server._execute_server_warmup``): ``requests.post(/generate,
  timeout=600)``, then ``kill_process_tree`` on failure; fixed, unless ``--skip-server-warmup``.
* The user's own (``--deadline SECONDS[=LABEL]``): a Kubernetes startupProbe's
  failureThreshold × periodSeconds, a systemd ``TimeoutStartSec``, a CI step limit.

``clock``: ``start`` clocks run from the server's start; ``step`` clocks from the start of
the forward step that triggered the build (≈ the build's start).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from fidoctor.errors import FidoctorError


@dataclass(frozen=True)
class Deadline:
    seconds: float
    setting: str      # what to change: an env var, a flag, or the user's label
    stack: str        # "vLLM" | "SGLang" | "yours"
    clock: str        # "start" | "step"
    what: str         # in words
    extend: str       # how to extend it, as a command-line fragment

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def stack_of(argv: Sequence[str], env: Mapping[str, str]) -> Optional[str]:
    """``vLLM``, ``SGLang`` or None, from the command line (``vllm serve``, ``-m sglang.…``)."""
    words = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(argv))
    if re.search(r"(^|[\s/.])vllm([\s.]|$)|vllm\.entrypoints", words):
        return "vLLM"
    if re.search(r"(^|[\s/.])sglang([\s.]|$)|sglang\.launch_server", words):
        return "SGLang"
    return None


def flag_value(argv: Sequence[str], *names: str) -> Optional[str]:
    """``--flag V`` or ``--flag=V`` (last one wins, as argparse does)."""
    found = None
    for i, a in enumerate(argv):
        for n in names:
            if a == n and i + 1 < len(argv):
                found = argv[i + 1]
            elif a.startswith(n + "="):
                found = a.split("=", 1)[1]
    return found


def _num(text: Optional[str]) -> Optional[float]:
    """A finite number, else None: 'nan', 'inf' or '1e400' in the server's environment or
    argv (VLLM_ENGINE_READY_TIMEOUT_S=inf) crashed run/watch in int() after the server had
    started (it ran on, orphaned, its exit code lost), and passed --deadline as no clock."""
    try:
        v = float(text) if text is not None else None
    except ValueError:
        return None
    return v if v is not None and math.isfinite(v) else None


def parse_user_deadline(text: str) -> Tuple[float, str]:
    """``600`` or ``600=k8s startupProbe`` → (600.0, label); bad input is a clear error."""
    secs, _, label = text.partition("=")
    value = _num(secs.strip().rstrip("s"))
    if value is None or value <= 0:
        raise FidoctorError(f"--deadline {text!r}: expected SECONDS[=LABEL], e.g. 600=startupProbe")
    return value, label.strip() or f"--deadline {secs.strip()}"


def deadlines(argv: Sequence[str], env: Mapping[str, str],
              user: Sequence[Tuple[float, str]] = ()) -> List[Deadline]:
    """Every clock we know of for this command, shortest first."""
    out: List[Deadline] = []
    stack = stack_of(argv, env)
    if stack == "vLLM" or "VLLM_ENGINE_READY_TIMEOUT_S" in env:
        s = _num(env.get("VLLM_ENGINE_READY_TIMEOUT_S")) or 600.0
        out.append(Deadline(s, "VLLM_ENGINE_READY_TIMEOUT_S", "vLLM", "start",
                            "vLLM's engine-ready timeout (the engine must be ready by then)",
                            f"VLLM_ENGINE_READY_TIMEOUT_S={int(max(s * 3, 1800))}"))
        tp = _num(flag_value(argv, "--tensor-parallel-size", "-tp")) or 1
        pp = _num(flag_value(argv, "--pipeline-parallel-size", "-pp")) or 1
        if tp * pp > 1 or "VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS" in env:
            s = _num(env.get("VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS")) or 300.0
            out.append(Deadline(s, "VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS", "vLLM", "step",
                                "vLLM's execute-model RPC timeout (one forward step)",
                                f"VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS={int(max(s * 3, 1800))}"))
    if stack == "SGLang":
        s = _num(flag_value(argv, "--watchdog-timeout")) or 300.0
        out.append(Deadline(s, "--watchdog-timeout", "SGLang", "step",
                            "SGLang's scheduler watchdog (SIGQUIT when a forward batch stalls)",
                            f"--watchdog-timeout {int(max(s * 3, 1800))}"))
        if "--skip-server-warmup" not in argv:
            out.append(Deadline(600.0, "SGLang warmup request (fixed 600 s)", "SGLang", "step",
                                "SGLang's startup warmup request (kills the server on timeout)",
                                "--skip-server-warmup (the first real request then pays)"))
    for secs, label in user:
        out.append(Deadline(secs, label, "yours", "start", "your deadline",
                            f"a longer {label}"))
    return sorted(out, key=lambda d: d.seconds)


def first_overrun(clocks: Sequence[Deadline], build_start: float, server_start: float,
                  eta_total: float) -> Optional[Tuple[Deadline, float]]:
    """The first clock this build will outlast, with the seconds it has left at build start.

    A ``start`` clock already past when the build began is not this build's (the server got
    through its start); a ``step`` clock runs from about the build's start.
    """
    best: Optional[Tuple[Deadline, float, float]] = None
    for d in clocks:
        if d.clock == "start":
            left = server_start + d.seconds - build_start
            if left <= 0:
                continue
        else:
            left = d.seconds
        if eta_total > left:
            kill_at = build_start + left
            if best is None or kill_at < best[2]:
                best = (d, left, kill_at)
    return (best[0], best[1]) if best else None
