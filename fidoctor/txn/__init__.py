"""fidoctor's transaction layer: every change a fix makes is journalled, backed up and undoable.

* ``journal``: append-only, fsynced records; written *before* each step.
* ``steps``: the changes (move aside into a quarantine, replace a file
  atomically) with apply / state / revert.
* ``transaction``: apply a list of steps, roll back on failure or Ctrl-C,
  recover a fix killed mid-way, undo a committed one.
* ``process``: terminating a stuck build tree (journalled, not reversible).
* ``lock``: one fix or undo at a time.
* ``safety``: symlink, writability and hash checks shared by the steps.
"""

from fidoctor.txn import movein as _movein  # noqa: F401 - registers the move-in step
from fidoctor.txn import process as _process  # noqa: F401 - registers the terminate step
from fidoctor.txn.lock import FixLock
from fidoctor.txn.safety import StepError
from fidoctor.txn.transaction import apply_steps, history, interrupted, rollback, undo

__all__ = ["FixLock", "StepError", "apply_steps", "history", "interrupted", "rollback", "undo"]
