"""Gatherer registry: every module in this package that defines ``gather`` is one.

Adding a gatherer is adding a file::

    NAME = "cache"            # section name in the snapshot
    BUDGET_S = 5.0            # wall-clock budget; past it the section is "timeout"
    REQUIRES = ("target",)    # sections that must be gathered first (optional)

    def gather(ctx, done) -> dict: ...

``ctx`` is the GatherContext, ``done`` maps finished section names to their
Section. Raising is allowed (PermissionError → "denied", FileNotFoundError →
"absent", anything else → "error"), but a gatherer should record per-item
problems as facts and carry on.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Dict, List, Tuple

from fidoctor.registry import plugin_modules


@dataclass(frozen=True)
class Gatherer:
    name: str
    budget_s: float
    requires: Tuple[str, ...]
    gather: Callable[..., Dict[str, Any]]
    order: int = 100


@lru_cache(maxsize=1)
def all_gatherers() -> List[Gatherer]:
    found = []
    for mod in plugin_modules(__name__, __path__, "gather"):
        found.append(
            Gatherer(
                name=getattr(mod, "NAME", mod.__name__.rsplit(".", 1)[-1]),
                budget_s=float(getattr(mod, "BUDGET_S", 5.0)),
                requires=tuple(getattr(mod, "REQUIRES", ())),
                gather=mod.gather,
                order=int(getattr(mod, "ORDER", 100)),
            )
        )
    found.sort(key=lambda g: (g.order, g.name))
    return found
