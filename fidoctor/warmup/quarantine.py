"""Move a half-built module dir aside, journalled so ``fidoctor undo`` brings it back.

Goes through the transaction layer (fidoctor/txn, the same MoveAside step the
``quarantine-module`` fix uses): journal first, one atomic rename into
``<workspace>/fidoctor-quarantine/<txid>/<name>``. If that layer is missing
or refuses, a plain JSON record under ``state_dir()/warmup/`` is written
instead, so the move is never silent.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, Optional

from fidoctor.errors import FidoctorError
from fidoctor.paths import quarantine_dir, state_dir


def move_aside(module_dir: str, reason: str, env: Optional[Dict[str, str]] = None
               ) -> Dict[str, Any]:
    """Quarantine ``module_dir``; return {"moved_to", "txid"|"record", "error"}."""
    module_dir = os.path.normpath(module_dir)
    if not os.path.isdir(module_dir) or os.path.islink(module_dir):
        return {"moved_to": None, "error": "not a directory"}
    workspace = os.path.dirname(os.path.dirname(module_dir))
    header = {"command": "warmup", "fix": "quarantine-module", "reason": reason,
              "modules": [module_dir], "time": time.time()}
    try:
        from fidoctor.fixes.quarantine_module import move_step
        from fidoctor.txn import FixLock, apply_steps
        from fidoctor.txn.journal import new_txid
    except ImportError:
        return _plain_move(module_dir, workspace, header, env)
    txid = new_txid()
    step = move_step(module_dir, workspace, txid)
    try:
        # The same lock as fix/undo, so neither sees this journal half-written as
        # "interrupted"; re-entrant when fix's own proof step got us here.
        with FixLock(state_dir(env), "fidoctor warmup (quarantine)", wait_s=10.0):
            apply_steps(state_dir(env), [step], header, txid=txid)
    except FidoctorError as e:
        return {"moved_to": None, "error": e.message}
    return {"moved_to": step.dst, "txid": txid}


def _plain_move(module_dir: str, workspace: str, header: Dict[str, Any],
                env: Optional[Dict[str, str]]) -> Dict[str, Any]:
    stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    dst = os.path.join(quarantine_dir(module_dir, stamp), os.path.basename(module_dir))
    rec_dir = os.path.join(state_dir(env), "warmup")
    rec = dict(header, src=module_dir, dst=dst, workspace=workspace)
    try:
        os.makedirs(rec_dir, exist_ok=True)
        path = os.path.join(rec_dir, f"quarantine-{stamp}.json")
        with open(path, "w") as f:
            json.dump(rec, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.rename(module_dir, dst)
    except OSError as e:
        return {"moved_to": None, "error": str(e)}
    return {"moved_to": dst, "record": path}
