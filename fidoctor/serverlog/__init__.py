"""Read the server's own words: SGLang / vLLM / FlashInfer output → finding ids.

Same ids as the probes (``cudart-missing-symbol``, ``cuda-toolkit-unusable``,
``build-killed`` …), so a finding from a log and one from the machine about
the same thing become one finding with both evidences (``merge``).

Parts: ``normalise`` (prefixes, ANSI, CR, wrapped lines, streams),
``anchors`` (build-phase proof), ``matchers/`` (one file per id),
``tracebacks`` (chains: the first exception is the cause), ``scanner`` (the
per-line API the live watch uses), ``source`` (files, gzip, stdin, budgets),
``verdict`` (hits → findings), ``merge`` (into a diagnosis).
"""

from __future__ import annotations

from typing import Any, Dict, List

from fidoctor.serverlog.scanner import LogHit, Scanner

SECTION = "serverlog"

__all__ = ["SECTION", "LogHit", "Scanner", "analyse"]


def analyse(paths: List[str], max_bytes: int = 0, max_s: float = 0.0) -> Dict[str, Any]:
    """Scan every log in ``paths`` (``-`` is stdin); the data of the snapshot's
    ``serverlog`` section: per-file results and the findings they support."""
    from fidoctor.serverlog import source, verdict

    results = [source.scan_file(p, max_bytes or source.MAX_BYTES, max_s or source.MAX_S)
               for p in paths]
    return {"files": results, "findings": [f.to_dict() for f in verdict.findings(results)]}
