"""Every id a user may type (finding ids for ``--only``/``--skip``, fix ids for ``--use``).

Why: ``fidoctor fix --only cache-incomplete-modul`` used to match nothing and
exit 0 "nothing to fix" — a script then believes the box was fixed. An
unknown id is bad input: exit 2 with a did-you-mean.
"""

from __future__ import annotations

import difflib
from typing import Iterable, List, Set

from fidoctor.errors import FidoctorError

WARMUP_IDS = ("warmup-stalled", "warmup-timed-out", "warmup-build-failed",
              "warmup-unsupported-version")


def finding_ids() -> Set[str]:
    """Ids a diagnosis, a server log or a warmup can report."""
    from fidoctor.probes import RETIRED, all_probes

    ids = {p.id for p in all_probes()} | set(WARMUP_IDS)
    try:
        from fidoctor.serverlog import verdict
        from fidoctor.serverlog.matchers import all_matchers

        ids |= {m.id for m in all_matchers()} | {verdict.NO_ACTIVITY, verdict.SLOW}
    except ImportError:  # a fidoctor without log reading
        pass
    try:
        from fidoctor.fleet.cross import IDS as FLEET_IDS

        ids |= set(FLEET_IDS)
    except ImportError:  # a fidoctor without fleet
        pass
    return ids - set(RETIRED)


def fix_ids() -> Set[str]:
    from fidoctor.fixes import all_fixes

    return set(all_fixes())


def check_ids(option: str, given: Iterable[str], known: Set[str], what: str) -> None:
    """Raise FidoctorError (exit 2) naming the first unknown id and the closest known ones."""
    for g in given:
        if g in known:
            continue
        close: List[str] = difflib.get_close_matches(g, sorted(known), n=3, cutoff=0.5)
        hint = (f"did you mean: {', '.join(close)}?" if close else
                f"known {what}: {', '.join(sorted(known))}")
        raise FidoctorError(f"{option} {g}: no such {what[:-1] if what.endswith('s') else what}",
                            hint)
