"""Probe registry: one module per finding id, discovered at run time (as ruff rules are).

A probe module defines::

    ID = "cache-incomplete-module"     # stable, kebab-case, names the problem
    REQUIRES = ("cache",)              # snapshot sections it reads
    def check(snap) -> Iterable[Finding]: ...
    CAUSE = True                       # optional: its findings name what they cause
                                       # in data["affects"] (see fidoctor.causes)

and a docstring saying what it detects, why it matters and how it is fixed.
``check`` is a pure function of the snapshot. If a section it requires was not
gathered (timeout, denied…) the probe is reported *inconclusive* with the
reason instead of being run on half the facts. Retired ids go in RETIRED and
are never reused.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterable, List, Tuple

from fidoctor.model import Finding
from fidoctor.registry import plugin_modules

RETIRED: Tuple[str, ...] = ()


@dataclass(frozen=True)
class Probe:
    id: str
    requires: Tuple[str, ...]
    check: Callable[..., Iterable[Finding]]
    doc: str
    module: str
    cause: bool = False


@lru_cache(maxsize=1)
def all_probes() -> List[Probe]:
    probes: List[Probe] = []
    for mod in plugin_modules(__name__, __path__, "check"):
        if mod.ID in RETIRED or any(p.id == mod.ID for p in probes):
            raise RuntimeError(f"probe {mod.__name__} reuses finding id {mod.ID!r} "
                               "(retired or taken); give it a new id")
        probes.append(
            Probe(
                id=mod.ID,
                requires=tuple(getattr(mod, "REQUIRES", ())),
                check=mod.check,
                doc=(mod.__doc__ or "").strip(),
                module=mod.__name__,
                cause=bool(getattr(mod, "CAUSE", False)),
            )
        )
    probes.sort(key=lambda p: p.id)
    return probes


def check_by_id(probe_id: str, snap) -> List[Finding]:
    """The findings of the registered probe ``probe_id`` over ``snap``; [] when no probe has
    that id (retired, or not installed): for callers outside diagnose (the live watch) that
    run one probe as a probe, through the registry, never by importing its module."""
    for p in all_probes():
        if p.id == probe_id:
            return list(p.check(snap))
    return []


def cause_ids() -> List[str]:
    """Ids of the probes that declare ``CAUSE = True``."""
    return [p.id for p in all_probes() if p.cause]
