"""cache-incomplete-module in server output: a cached module that is not a whole ``.so``.

What: ``OSError: …/cached_ops/sampling/sampling.so: invalid ELF header``
(FlashInfer#2010), ``…: file too short`` or ``…: cannot read file data`` (glibc's
loader on a truncated file, as a real ``ctypes.CDLL`` prints it): the loader's words for a ``.so``
cut short by a killed link or a concurrent rebuild.
Why: "usually happens when we trying to load a in-complete shared object"
(FlashInfer#2010); every start fails the same way until the module is rebuilt.
Fix: move that one module dir aside so it is rebuilt (``fidoctor fix``
quarantines it, undoable).
"""

from __future__ import annotations

import re
from typing import Dict, List

from fidoctor.model import Fix
from fidoctor.serverlog.matchers import confirm

ID = "cache-incomplete-module"
SEVERITY = "error"
ANCHOR = "self"
TRIGGERS = ("invalid elf header", "file too short", "elf load command", "cannot read file data",
            "phentsize", "only et_dyn")
PATTERNS = [re.compile(r"(?P<path>/\S+?\.so): (?P<problem>invalid ELF header|file too short|"
                       r"cannot read file data|ELF load command \w+ not page-aligned|"
                       r"ELF file's phentsize not the expected size|"
                       r"only ET_DYN and ET_EXEC can be loaded)")]


def title(d: Dict[str, str]) -> str:
    return f"{d.get('path', 'a cached module').rsplit('/', 1)[-1]} cannot load: {d.get('problem')}"


def fixes(d: Dict[str, str]) -> List[Fix]:
    return [Fix("Move that module dir aside so the next start rebuilds it (on the machine: "
                "fidoctor fix --only cache-incomplete-module)", [confirm()], safety="safe")]
