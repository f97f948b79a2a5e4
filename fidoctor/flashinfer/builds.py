"""Tie a process to the FlashInfer module directory it is building.

ninja gets ``-C cached_ops/<name>`` (0.6.1+) or ``-C cached_ops -f
cached_ops/<name>/build.ninja`` (0.2.6–0.6.0); nvcc gets absolute output paths
(0.6.1+) or paths relative to a ``cached_ops`` cwd; torch (≤0.2.5) runs ninja
with ``cwd=cached_ops/<name>``. Anything else inherits from its parent.
"""

from __future__ import annotations

import os
from typing import Iterable, Optional

COMPILERS = frozenset({
    "ninja", "nvcc", "cicc", "ptxas", "cudafe++", "fatbinary", "nvlink", "cc1plus", "cc1",
    "gcc", "g++", "c++", "cc", "ld", "collect2", "ld.bfd", "ld.gold", "as", "nvdisasm",
    "bin2c", "sh",
})
MARKER = "/cached_ops/"


def module_dir_in(path: str) -> Optional[str]:
    """``…/cached_ops/<name>`` if ``path`` lies inside one (``tmp`` excluded)."""
    i = path.find(MARKER)
    if i < 0:
        return None
    rest = path[i + len(MARKER):].lstrip("/")
    name = rest.split("/", 1)[0]
    if not name or name == "tmp" or name.endswith((".lock", ".ninja")):
        return None
    return path[: i + len(MARKER)] + name


def module_dir_of(argv: Iterable[str], cwd: Optional[str]) -> Optional[str]:
    """The module dir a compiler/ninja process works on, from its argv and cwd."""
    # ``sh -c "nvcc … -o …/cached_ops/<m>/x.o …"`` carries a whole command in one
    # argument: look at its words, not at the string as a path.
    words = [w for a in argv for w in a.split()]
    for a in words:
        # ``-o/abs/path`` and ``--flag=/abs/path`` carry a path after the option
        glued = a[a.find("/"):] if a.startswith("-") and "/" in a else a
        for piece in (glued, a.split("=", 1)[-1], a):
            cand = piece
            if cwd and not os.path.isabs(piece) and "/" in piece:
                cand = os.path.join(cwd, piece)
            if not os.path.isabs(cand):
                continue
            found = module_dir_in(os.path.normpath(cand)) if MARKER in cand else None
            if found:
                return found
    if cwd:
        return module_dir_in(cwd.rstrip("/") + "/")
    return None
