"""Where fidoctor keeps its own state, and where it moves things it takes aside.

Module dirs are quarantined *next to* their workspace (same filesystem, so the
move is one atomic rename and nothing is copied), under a name FlashInfer
never looks at.
"""

from __future__ import annotations

import os
import time
from typing import Mapping, Optional

QUARANTINE = "fidoctor-quarantine"


def state_dir(env: Optional[Mapping[str, str]] = None) -> str:
    env = os.environ if env is None else env
    base = env.get("XDG_STATE_HOME") or os.path.join(
        env.get("HOME") or os.path.expanduser("~"), ".local", "state"
    )
    return os.path.join(base, "fidoctor")


def quarantine_dir(module_dir: str, stamp: Optional[str] = None) -> str:
    """``<workspace>/fidoctor-quarantine/<stamp>/`` for ``<workspace>/cached_ops/<name>``."""
    workspace = os.path.dirname(os.path.dirname(os.path.normpath(module_dir)))
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    return os.path.join(workspace, QUARANTINE, stamp)


def cache_dir(env: Optional[Mapping[str, str]] = None) -> str:
    """fidoctor's own cache (derived facts that are safe to lose): ``$XDG_CACHE_HOME/fidoctor``.

    Always fidoctor's own environment, never the target's: it is our scratch space.
    """
    env = os.environ if env is None else env
    base = env.get("XDG_CACHE_HOME") or os.path.join(
        env.get("HOME") or os.path.expanduser("~"), ".cache"
    )
    return os.path.join(base, "fidoctor")
