"""build-lock-held in server output: a process waits on FlashInfer's JIT lock.

What: a ``py-spy dump`` (or a traceback) whose stack waits in filelock's
``BaseFileLock.acquire (filelock/_core/_lock.py:NNN)`` (filelock 4.x; ``acquire
(filelock/_api.py:NNN)`` in 3.x) under FlashInfer's JIT (``build_and_load
(flashinfer/jit/core.py)``, ``load_cuda_ops``), torch's FileBaton spinning in
``wait (torch/utils/file_baton.py)`` (FlashInfer ≤ 0.2.5), or filelock's DEBUG
line ``Lock … not acquired on …/cached_ops/tmp/<module>.lock, waiting …``
(SGLang#5034, FlashInfer#972).
Why: every rank needing the same module serializes on one lock; a FileBaton
left by a killed build blocks forever. From a log alone, a healthy wait and a
stale lock look the same: the holder is on the machine.
Fix: run ``fidoctor diagnose --pid <waiting pid>`` on the machine: it names the
holder and whether it still compiles (wait) or is stale (remove it).
"""

from __future__ import annotations

import re
from typing import Dict, List

from fidoctor.model import Fix

ID = "build-lock-held"
SEVERITY = "warning"
ANCHOR = "self"
TRIGGERS = ("filelock", "file_baton", "not acquired on")
LOCK_FILE = r"(?:filelock/[\w/]+|file_baton)\.py"
PATTERNS = [
    re.compile(r"Lock \d+ not acquired on (?P<path>\S+?\.lock)"),
    # py-spy: "BaseFileLock.acquire (filelock/_core/_lock.py:195)" (filelock 4.x),
    # "acquire (filelock/_api.py:344)" (3.x), "wait (torch/utils/file_baton.py:50)"
    re.compile(r"(?P<func>[\w.]*(?:acquire|_poll_until_acquired|wait)) \((?P<frame>[\w/.\-]*"
               + LOCK_FILE + r"):\d+\)"),
    re.compile(r"File \"(?P<frame>[^\"]*" + LOCK_FILE + r")\", line \d+, in "
               r"(?P<func>\w*(?:acquire|wait)\w*)"),
]
# A frame alone may be an unrelated filelock (a model download): the same stack must
# show FlashInfer's JIT or torch's extension builder within this many lines of it.
CONFIRM = (re.compile(r"flashinfer/jit/|build_and_load|load_cuda_ops|cpp_extension|"
                      r"torch_extensions|cached_ops"), 25)


def title(d: Dict[str, str]) -> str:
    if d.get("path"):
        return f"a process waits for the JIT lock {d['path'].rsplit('/', 1)[-1]}"
    what = "torch's FileBaton" if "baton" in d.get("frame", "") else "the JIT's filelock"
    return f"a process is blocked in {what} (waiting for another build of the module)"


def fixes(d: Dict[str, str]) -> List[Fix]:
    return [Fix("On the machine, find the holder: a live build means wait (or warm up once before "
                "starting all ranks); a stale lock is removed by fidoctor fix",
                ["fidoctor diagnose --pid <the waiting server pid>"], safety="safe")]
