"""The per-finding pages (``docs/findings/<id>.md``), as shipped inside the package.

The pages live in the source tree under ``docs/findings/``; ``fidoctor/findings_docs`` points
there (a symlink in the checkout, real files in the wheel and the sdist), so an installed
fidoctor prints them without the source. ``fidoctor explain ID`` shows one; findings name
theirs in text (``docs:``), JSON (``doc``) and the report. Retired ids keep their page.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

PAGES = Path(__file__).resolve().parent / "findings_docs"


def doc_ref(finding_id: str) -> str:
    """Where a finding's page is, as written in the sdist and the source tree."""
    return f"docs/findings/{finding_id}.md"


def page_path(finding_id: str) -> Optional[Path]:
    """The installed page of ``finding_id``, or None (an id has no ``/`` or leading dot)."""
    if not finding_id or "/" in finding_id or finding_id.startswith("."):
        return None
    p = PAGES / f"{finding_id}.md"
    return p if p.is_file() else None


def page(finding_id: str) -> Optional[str]:
    p = page_path(finding_id)
    return p.read_text(encoding="utf-8") if p else None


def documented_ids() -> List[str]:
    """Ids that have a page here (registered and retired ones)."""
    if not PAGES.is_dir():
        return []
    return sorted(p.stem for p in PAGES.glob("*.md"))
