"""Versioned JSON cache files in fidoctor's cache dir (ELF facts, tool answers): load and save.

Why one place: such a file is safe to lose, so reading it never fails a run
(absent is empty; a foreign, old, truncated or unreadable one is empty with a
note), and writing it goes through ``safeio.write_atomic`` (same-dir temp
file, fsync, rename; only a regular file is ever replaced), so a crash or a
concurrent fidoctor never leaves half a file. Errors come back as strings for
the gatherer to record, never as exceptions.

File shape: ``{"version": N, "entries": {key: value}}``, plus what a cache adds
beside them (the ELF fact cache's ``table``: fidoctor/elf.py).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Tuple

from fidoctor.fsutil import open_regular
from fidoctor.safeio import UnsafeFile, write_atomic


def load_file(path: str, version: int, what: str) -> Tuple[Optional[Dict[str, Any]], str]:
    """(the file's object, note): None when absent or unusable; the note is "" unless the
    file was unusable. The object has the right ``version`` and an ``entries`` object."""
    try:
        with open_regular(path) as f:
            raw = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        return None, ""
    except (OSError, ValueError, UnicodeDecodeError) as e:
        return None, f"{what} unreadable ({type(e).__name__}); starting afresh"
    if isinstance(raw, dict) and raw.get("version") == version and isinstance(
            raw.get("entries"), dict):
        return raw, ""
    return None, f"foreign or old {what} format; starting afresh"


def load_entries(path: str, version: int, what: str) -> Tuple[Dict[str, Any], str]:
    """(entries, note) from ``path``; the note is "" unless the file was unusable."""
    raw, note = load_file(path, version, what)
    return (raw["entries"] if raw is not None else {}), note


def save_entries(path: str, version: int, entries: Dict[str, Any], what: str,
                 extra: Optional[Dict[str, Any]] = None) -> Optional[str]:
    """Write ``entries`` (and ``extra``'s keys beside them) to ``path`` atomically; an
    error string instead of raising."""
    # dumps, not dump: json.dump streams through the pure-Python encoder.
    data = json.dumps({"version": version, **(extra or {}), "entries": entries},
                      separators=(",", ":"))
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        write_atomic(path, data.encode("utf-8"), what=what)
    except OSError as e:
        return f"cannot save {what} {path}: {e.strerror or e}"
    except UnsafeFile as e:
        return e.message
    return None
