"""Build-phase anchors: proof that a log shows FlashInfer's JIT at work.

Why: the word "flashinfer" in a log is not evidence of a JIT problem. An
inference OOM or an NCCL error passes through FlashInfer's wrappers and names
them in its traceback. A JIT finding is raised only when the same log also
shows the build phase: a cached_ops path, build.ninja, ninja's ``[n/m]``
steps, an nvcc/cicc command line, FlashInfer's ``Building JIT module`` /
``Loading JIT ops`` lines, the JIT entry points (``build_and_load``,
``load_cuda_ops``, ``flashinfer/jit/``) or a FileBaton / JIT-lock frame.

Also here: the build start/finish lines whose times give a build's duration.
"""

from __future__ import annotations

import re
from typing import Optional

ANCHORS = [
    ("cached_ops path", re.compile(r"cached_ops")),
    ("build.ninja", re.compile(r"build\.ninja")),
    ("ninja step", re.compile(r"^\s*\[\d+/\d+\] ")),
    ("ninja", re.compile(r"^ninja: (?:Entering directory|build stopped)|Ninja build failed")),
    ("nvcc command line", re.compile(r"\bnvcc\b.*(?:-gencode|--generate-dependencies|\s-c\s|-arch[= ])")),
    ("cicc", re.compile(r"\bcicc\b")),
    ("FlashInfer JIT log", re.compile(r"flashinfer\.jit: ?(?:Building JIT module|Loading JIT ops|"
                                      r"Finished loading JIT ops|Prebuilt kernels not found)")),
    ("JIT entry point", re.compile(r"\b(?:build_and_load|load_cuda_ops|gen_jit_spec|"
                                   r"Error building extension)\b|flashinfer/jit/")),
    ("FileBaton", re.compile(r"file_baton|FileBaton")),
    ("FlashInfer sources compiled", re.compile(r"flashinfer/\S*generated/\S+\.(?:cu|inc)\b|"
                                               r"In file included from \S*flashinfer/data/")),
]
# Literals that every anchor line contains one of (the scanner's cheap prefilter).
TRIGGERS = ("cached_ops", "generated/", "in file included from", "ninja", "nvcc", "cicc",
            "flashinfer", "build_and_load", "load_cuda_ops", "gen_jit_spec",
            "error building extension", "baton", "cpp_extension", "torch_extensions")
STEP = re.compile(r"^\s*\[\d+/\d+\] ")

BUILD_START = re.compile(r"flashinfer\.jit: ?(?:Building JIT module (?P<new>[\w.\-]+)|"
                         r"Loading JIT ops: ?(?P<old>[\w.\-]+))")
BUILD_FINISH = re.compile(r"flashinfer\.jit: ?Finished loading JIT ops: ?(?P<name>[\w.\-]+)")
MODULE_DIR = re.compile(r"cached_ops/(?P<name>(?!tmp/)[\w.\-]{3,})(?:/|'|$)")
HANG_SIGN = re.compile(r"(?i)no available shared memory broadcast block|\btimed out\b|"
                       r"\btimeout\b|watchdog|\bhung\b|\bhang(?:s|ing)?\b")


def anchor_of(text: str) -> Optional[str]:
    """The kind of build-phase anchor ``text`` is, or None."""
    if "[" in text and STEP.match(text):
        return "ninja step"
    for name, rx in ANCHORS:
        if rx.search(text):
            return name
    return None


def module_of(text: str) -> Optional[str]:
    """A module name the line names (a build start, or a ``cached_ops/<name>/`` path)."""
    m = BUILD_START.search(text)
    if m:
        return m.group("new") or m.group("old")
    m = MODULE_DIR.search(text)
    if m:
        name = m.group("name")
        return name[:-3] if name.endswith(".so") else name
    return None
