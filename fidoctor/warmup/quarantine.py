"""Move a module dir aside through the transaction layer, so ``fidoctor undo`` brings it back.

The same step (``txn.steps.quarantine_step``), lock (``FixLock``) and journal
as ``fidoctor fix``: journal first, then one atomic rename into
``<workspace>/fidoctor-quarantine/<txid>/<name>``. There is no second way: if
the transaction layer refuses (no writable state dir, another fix holds the
lock for more than 10 s), the dir stays where it is and the caller says so.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, Optional

from fidoctor.errors import FidoctorError
from fidoctor.paths import state_dir
from fidoctor.txn import FixLock, apply_steps
from fidoctor.txn.journal import new_txid
from fidoctor.txn.steps import quarantine_step


def move_aside(module_dir: str, reason: str, env: Optional[Dict[str, str]] = None,
               check_unchanged: bool = False) -> Dict[str, Any]:
    """Quarantine ``module_dir``; return {"moved_to", "txid"} or {"moved_to": None, "error"}.

    ``check_unchanged`` is off by default: warmup moves a dir right after it
    ended (or before it starts) the build that writes it.
    """
    module_dir = os.path.normpath(module_dir)
    if not os.path.isdir(module_dir) or os.path.islink(module_dir):
        return {"moved_to": None, "error": "not a directory"}
    header = {"command": "warmup", "fix": "quarantine-module", "reason": reason,
              "modules": [module_dir], "time": time.time()}
    txid = new_txid()
    try:
        step = quarantine_step(module_dir, txid, check_unchanged=check_unchanged)
        # The same lock as fix/undo, so neither sees this journal half-written as
        # "interrupted"; re-entrant when fix's own proof step got us here.
        with FixLock(state_dir(env), "fidoctor warmup (quarantine)", wait_s=10.0):
            apply_steps(state_dir(env), [step], header, txid=txid)
    except FidoctorError as e:
        return {"moved_to": None, "error": e.message}
    except OSError as e:
        return {"moved_to": None, "error": e.strerror or str(e)}
    return {"moved_to": step.dst, "txid": txid}


def put_back(txid: str, env: Optional[Dict[str, str]] = None) -> Optional[str]:
    """Undo the quarantine ``txid`` (a good module moved aside before a rebuild that failed);
    None when done, else why not (the journal keeps it for ``fidoctor undo``)."""
    from fidoctor.txn import undo

    try:
        with FixLock(state_dir(env), "fidoctor warmup (put back)", wait_s=10.0):
            out = undo(state_dir(env), txid)
    except FidoctorError as e:
        return e.message
    return "; ".join(out.left) or None
