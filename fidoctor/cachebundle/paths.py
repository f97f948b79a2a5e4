"""Where the builder's paths land in the target: the rewrite of what ninja keys on.

FlashInfer writes absolute, resolved paths into ``build.ninja`` (outputs,
sources, ``-I``/``-isystem`` dirs) and the ``cuda_home`` string as the target
resolves it; ``.ninja_deps`` holds absolute header paths. Each builder prefix
maps to the target's: the workspace, the flashinfer and tvm_ffi package dirs,
the interpreter's site-packages, and ``cuda_home`` (the string, and its
realpath, which is what nvcc's own include paths name). Longest prefix wins; a
prefix matches only at a path boundary (``/usr/local/cuda`` never matches
``/usr/local/cuda-13.0``). Everything else (``/usr/include``, the Python
headers) must be the same path with the same bytes on both sides.
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Optional, Tuple

from fidoctor.cachebundle.target import Target


class PathMap:
    def __init__(self, source: Dict[str, Any], t: Target, ws: str) -> None:
        pairs: List[Tuple[str, str]] = []

        def add(a: Optional[str], b: Optional[str]) -> None:
            if a and b and a != "/" and (a, b) not in pairs:
                pairs.append((a.rstrip("/"), b.rstrip("/")))

        self.src_ws = (source.get("workspace") or "").rstrip("/")
        add(self.src_ws, ws)
        add(source.get("flashinfer_dir"), t.flashinfer_dir)
        add(source.get("tvm_ffi_dir"), t.tvm_ffi_dir)
        add(source.get("site_dir"), t.site_dir)
        add(source.get("cuda_home"), t.cuda_home)
        add(source.get("cuda_home_real"), t.cuda_home_real)
        pairs.sort(key=lambda p: -len(p[0]))
        self.pairs = pairs
        self.table = dict(pairs)
        self._memo: Dict[str, str] = {}
        alt = "|".join(re.escape(a) for a, _ in pairs) or r"(?!)"
        self._re = re.compile(rf"(?:(?<![\w.\-/])|(?<=-I)|(?<=-L))({alt})(?=[/\s:$\"']|$)", re.M)

    def map(self, path: str) -> str:
        """The target's path for a builder's absolute path (unchanged if no prefix fits)."""
        hit = self._memo.get(path)
        if hit is None:
            hit = path
            for a, b in self.pairs:
                if path == a or path.startswith(a + "/"):
                    hit = b + path[len(a):]
                    break
            self._memo[path] = hit
        return hit

    def shipped(self, path: str) -> Optional[str]:
        """The workspace-relative path of a builder file that lives in its workspace."""
        if self.src_ws and path.startswith(self.src_ws + "/"):
            return os.path.relpath(path, self.src_ws)
        return None

    def sub_text(self, text: str) -> str:
        """``text`` (a build.ninja) with every builder prefix replaced, in one pass."""
        return self._re.sub(lambda m: self.table[m.group(1)], text)
