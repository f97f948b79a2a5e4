"""What nvcc accepts, and what FlashInfer asks of it: archs and flags, as plain data.

Pure functions (parsers of nvcc's own output and of FlashInfer's rules), so
probes and gatherers share one reading and tests can feed them real text.

Arch rules are FlashInfer 0.7.x's ``CompilationContext._normalize_cuda_arch``:
SM 9.x gets the ``a`` suffix (``compute_90a``: FA3 needs it), SM 10+ ``a``,
SM 12.0 ``f`` on CUDA ≥ 12.9 else ``a`` on 12.8 (older: FlashInfer raises
"SM 120 requires CUDA >= 12.8"), SM 12.1+ ``a`` on ≥ 12.9; a suffix the user
wrote is kept. ``nvcc --list-gpu-arch`` (CUDA 11.0+) lists base archs only
(13.0 lists ``compute_90``, not ``compute_90a``), so the decisive check is
``nvcc --dryrun -gencode=arch=compute_X,code=sm_X``, which fails with nvcc's
real ``Unsupported gpu architecture`` line and compiles nothing.
``ARCH_FLOOR`` is the fallback where nvcc cannot be asked.
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple

# The first CUDA release whose nvcc accepts each arch (NVIDIA's release notes).
ARCH_FLOOR: Dict[str, Tuple[int, int]] = {
    "75": (10, 0), "80": (11, 0), "86": (11, 1), "87": (11, 4), "89": (11, 8), "90": (11, 8),
    "90a": (12, 0), "100": (12, 8), "100a": (12, 8), "101a": (12, 8), "120": (12, 8),
    "120a": (12, 8), "100f": (12, 9), "103": (12, 9), "103a": (12, 9), "103f": (12, 9),
    "120f": (12, 9), "121": (12, 9), "121a": (12, 9), "121f": (12, 9), "110": (13, 0),
    "110a": (13, 0), "110f": (13, 0),
}
_HELP_LINE = re.compile(r"^(--[A-Za-z0-9][\w+-]*)(?:\s.*?)?\((-[\w+-]+)\)", re.M)
_HELP_LONG = re.compile(r"^(--[A-Za-z0-9][\w+-]*)", re.M)
_ARCH_TOKEN = re.compile(r"\b(compute_\d+[a-z]?)\b")
_GENCODE = re.compile(r"arch=compute_(\d+[a-z]?)")
# Flags whose check would only be noise: preprocessor/linker/include flags are the host
# compiler's business as much as nvcc's, and every nvcc since 8.0 knows them.
_SKIP = ("-D", "-U", "-I", "-L", "-l", "-isystem", "-O", "$")
# FlashInfer adds these only when nvcc is new enough (cpp_ext.build_cuda_cflags).
VERSION_GATED = {"-static-global-template-stub": (12, 8)}
DEBUG_FLAGS = ("-G", "--device-debug", "-O0")


def parse_help(text: str) -> List[str]:
    """Every option name ``nvcc --help`` documents, long (``--foo``) and short (``-foo``)."""
    names = set(_HELP_LONG.findall(text))
    for long_, short in _HELP_LINE.findall(text):
        names.add(long_)
        names.add(short)
    return sorted(names)


def parse_list_gpu_arch(text: str) -> List[str]:
    """``compute_XX`` lines of ``nvcc --list-gpu-arch``, as ``XX`` strings, in order."""
    return [t[len("compute_"):] for t in _ARCH_TOKEN.findall(text)]


def fatal_line(text: str) -> str:
    """nvcc's ``nvcc fatal : …`` line (or the last line) of a failed run."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in lines:
        if "fatal" in ln:
            return ln[:300]
    return lines[-1][:300] if lines else ""


def version_at_least(version: Optional[str], want: Tuple[int, int]) -> Optional[bool]:
    if not version:
        return None
    m = re.match(r"(\d+)\.(\d+)", version)
    if not m:
        return None
    return (int(m.group(1)), int(m.group(2))) >= want


def normalize_arch(entry: str, cuda_version: Optional[str]) -> Tuple[Optional[str], str]:
    """One FLASHINFER_CUDA_ARCH_LIST entry (``9.0``, ``12.0f``) → (``90a``, note) as FI 0.7 does.

    Returns (None, why) for an entry FlashInfer itself rejects.
    """
    m = re.fullmatch(r"(\d+)\.(\d+)([a-z]?)(\+PTX)?", entry.strip())
    if not m:
        return None, f"{entry!r} is not MAJOR.MINOR[suffix]"
    major, minor, suffix = int(m.group(1)), int(m.group(2)), m.group(3)
    if suffix:
        return f"{major}{minor}{suffix}", ""
    if major == 9:
        return f"{major}{minor}a", "FlashInfer adds the 'a' suffix on SM 9.x"
    if major == 12:
        ge129 = version_at_least(cuda_version, (12, 9))
        ge128 = version_at_least(cuda_version, (12, 8))
        if minor == 0:
            if ge129:
                return "120f", "FlashInfer uses 120f on CUDA >= 12.9"
            if ge128:
                return "120a", "FlashInfer uses 120a on CUDA 12.8"
            return None, "FlashInfer raises 'SM 120 requires CUDA >= 12.8' with this toolkit"
        if ge129:
            return f"{major}{minor}a", ""
        return None, "FlashInfer raises 'SM 12.1+ requires CUDA >= 12.9' with this toolkit"
    if major >= 10:
        return f"{major}{minor}a", "FlashInfer adds the 'a' suffix on SM 10+"
    return f"{major}{minor}", ""


def split_arch_list(value: str) -> List[str]:
    """FLASHINFER_CUDA_ARCH_LIST is space-separated; TORCH_CUDA_ARCH_LIST also takes ';'."""
    return [t for t in re.split(r"[;\s]+", value.strip()) if t]


def arch_from_capability(cc: str, cuda_version: Optional[str]) -> Tuple[Optional[str], str]:
    """A GPU's compute capability (``9.0``) → the arch FlashInfer builds for it."""
    return normalize_arch(cc, cuda_version)


def archs_of_dir(name: Optional[str]) -> List[str]:
    """The archs a workspace dir name stands for: ``75_80_89`` → [75, 80, 89]."""
    if not name or name == "noarch":
        return []
    return [a for a in name.split("_") if re.fullmatch(r"\d{2,3}[a-z]?", a)]


def gencode_archs(flags: List[str]) -> List[str]:
    """Archs named in ``-gencode=arch=compute_XX,…`` flags."""
    out: List[str] = []
    for f in flags:
        for a in _GENCODE.findall(f):
            if a not in out:
                out.append(a)
    return out


def floor_of(arch: str) -> Optional[Tuple[int, int]]:
    return ARCH_FLOOR.get(arch)


def option_name(flag: str) -> Optional[str]:
    """The nvcc option a build.ninja token names (``--compress-mode=size`` → ``--compress-mode``),
    or None for tokens not worth checking (defines, include and link dirs, ninja variables)."""
    if not flag.startswith("-") or flag.startswith(_SKIP) or flag in ("-", "--"):
        return None
    return flag.split("=", 1)[0]


def known_option(name: str, options: List[str]) -> bool:
    """nvcc accepts ``--long`` and ``-short``; be lenient about the dash count."""
    bare = name.lstrip("-")
    opts = set(options)
    return name in opts or f"-{bare}" in opts or f"--{bare}" in opts


def debug_flags(flags: List[str]) -> List[str]:
    return [f for f in flags if f in DEBUG_FLAGS or f.startswith("--device-debug")]
