"""One module's outcome in a warmup: what the supervisor fills in and everyone reads.

Its own module so that the supervisor, the verdicts, the progress renderers
and the runner all import it from below, never from each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from fidoctor.model import Finding


@dataclass
class ModuleResult:
    key: str
    name: str = ""
    module_dir: str = ""
    status: str = "queued"  # queued|cached|done|failed|stalled|timed_out|interrupted|skipped
    seconds: float = 0.0
    error: str = ""
    max_jobs: int = 0
    jobs_reason: str = ""
    peak_rss: int = 0
    cpu_seconds: float = 0.0
    verdict: Optional[Finding] = None
    quarantined: Optional[str] = None
    survivors: List[int] = field(default_factory=list)
    pids_seen: List[int] = field(default_factory=list)
    info: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k not in ("verdict", "info")}
        d["verdict"] = self.verdict.to_dict() if self.verdict else None
        # ninja's reasons for rebuilding a cached module left alone, and what was done instead
        d["rebuild_pending"] = self.info.get("rebuild_pending") or []
        d["note"] = self.info.get("note") or None
        return d
