"""Log matchers: one module per finding id, the same ids as the probes.

A matcher module defines::

    ID = "cuda-toolkit-unusable"      # a probe's id (or a log-only id)
    SEVERITY = "error"
    ANCHOR = "build"                  # "build": needs a build-phase anchor in the same log;
                                      # "self": the line names a FlashInfer path itself
                                      #   (group ``path``), else it needs an anchor too;
                                      # "none": the line is evidence on its own
    TRIGGERS = ("cannot find -l",)    # lower-case literals; only lines holding one are tried
    PATTERNS = [re.compile(...)]      # named groups become the hit's ``detail``; a group
                                      # named ``fi`` marks FlashInfer's own words (self-anchored)
    def title(detail) -> str: ...     # the finding's title from the first hit
    def fixes(detail) -> List[Fix]: ...

and a docstring (What/Why/Fix) that names the real messages it reads and where
they come from. ``match(text)`` may be defined to replace the default (the
first pattern that matches). ``CONFIRM = (regex, n)`` keeps a hit only when a
line of the same stream within ``n`` lines (before or after it) matches the
regex. The registry is discovered like the probes'.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Dict, List, Optional, Pattern, Tuple

from fidoctor.model import Fix
from fidoctor.registry import plugin_modules

ANCHOR_KINDS = ("build", "self", "none")
FLASHINFER_PATH = re.compile(r"flashinfer|cached_ops|torch_extensions")


@dataclass(frozen=True)
class Matcher:
    id: str
    severity: str
    anchor: str
    triggers: Tuple[str, ...]
    match: Callable[[str], Optional[Dict[str, str]]]
    title: Callable[[Dict[str, str]], str]
    fixes: Callable[[Dict[str, str]], List[Fix]]
    doc: str
    module: str
    confirm: Optional[Tuple[Pattern, int]] = None

    def self_anchored(self, detail: Dict[str, str]) -> bool:
        if self.anchor == "none" or "fi" in detail:  # "fi": FlashInfer's own message
            return True
        return self.anchor == "self" and bool(FLASHINFER_PATH.search(detail.get("path", "")))


def _default_match(patterns: List[Pattern]) -> Callable[[str], Optional[Dict[str, str]]]:
    def match(text: str) -> Optional[Dict[str, str]]:
        for rx in patterns:
            m = rx.search(text)
            if m:
                return {k: v for k, v in m.groupdict().items() if v is not None}
        return None

    return match


@lru_cache(maxsize=1)
def all_matchers() -> List[Matcher]:
    out = []
    for mod in plugin_modules(__name__, __path__, "TRIGGERS"):
        anchor: Any = getattr(mod, "ANCHOR", "build")
        if anchor not in ANCHOR_KINDS:
            raise ValueError(f"{mod.__name__}: ANCHOR {anchor!r} not in {ANCHOR_KINDS}")
        out.append(Matcher(
            id=mod.ID, severity=mod.SEVERITY, anchor=anchor,
            triggers=tuple(t.lower() for t in mod.TRIGGERS),
            match=getattr(mod, "match", None) or _default_match(mod.PATTERNS),
            title=mod.title, fixes=mod.fixes, doc=(mod.__doc__ or "").strip(),
            module=mod.__name__, confirm=getattr(mod, "CONFIRM", None),
        ))
    return out


def by_id() -> Dict[str, Matcher]:
    return {m.id: m for m in all_matchers()}


def confirm(python_hint: str = "<serving venv>/bin/python") -> str:
    """The command that checks a log's verdict on the machine itself."""
    return f"fidoctor diagnose --python {python_hint}   # on the machine that wrote the log"
