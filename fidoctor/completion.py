"""Shell completion of the ids users type: finding ids, fix ids, warmup module kinds.

Click completes commands and options by itself (``_FIDOCTOR_COMPLETE=bash_source fidoctor``,
see README); these callbacks add the values. They run on every Tab, so they read names
without importing the probes: finding ids from the shipped pages (a test checks that every
registered id has one and every page an id), fix ids from the fix modules' file names (a test
checks they are the registered ids), module kinds from the warmup spec table.
"""

from __future__ import annotations

import pkgutil
from typing import Any, List

from click.shell_completion import CompletionItem


def _items(names: List[str], incomplete: str, prefix: str = "") -> List[CompletionItem]:
    return [CompletionItem(prefix + n) for n in names if n.startswith(incomplete)]


def finding_id_names() -> List[str]:
    from fidoctor.findingdocs import documented_ids
    from fidoctor.probes import RETIRED

    return [i for i in documented_ids() if i not in RETIRED]


def fix_id_names() -> List[str]:
    from fidoctor import fixes

    return sorted(m.name.replace("_", "-") for m in pkgutil.iter_modules(fixes.__path__)
                  if not m.name.startswith("_"))


def complete_finding_ids(ctx: Any, param: Any, incomplete: str) -> List[CompletionItem]:
    return _items(finding_id_names(), incomplete)


def complete_fix_ids(ctx: Any, param: Any, incomplete: str) -> List[CompletionItem]:
    return _items(fix_id_names(), incomplete)


def complete_module_kinds(ctx: Any, param: Any, incomplete: str) -> List[CompletionItem]:
    """``--modules decode,prefill-f<Tab>``: the kind of the last comma item ('+' kept)."""
    from fidoctor.warmup.specs import KINDS

    head, _, last = incomplete.rpartition(",")
    head = head + "," if head or incomplete.startswith(",") else ""
    plus = "+" if last.startswith("+") else ""
    return _items(list(KINDS), last[len(plus):], head + plus)
