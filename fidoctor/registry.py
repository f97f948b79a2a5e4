"""Plugin discovery shared by probes, gatherers and fixes: one file, one plugin.

Every public module of a package that defines the entry point (``check``,
``gather``, ``plan``) is a plugin; modules starting with ``_`` are helpers.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import Iterable, List


def plugin_modules(package: str, path: Iterable[str], entry_point: str) -> List[ModuleType]:
    """The modules of ``package`` (at ``path``) that define ``entry_point``, by file name."""
    found = []
    for info in sorted(pkgutil.iter_modules(list(path)), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{package}.{info.name}")
        if hasattr(mod, entry_point):
            found.append(mod)
    return found
