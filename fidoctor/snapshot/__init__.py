"""The snapshot: every fact the probes read, as plain, versioned, serializable data.

Gathering (which touches the machine) and judging (pure functions over this
object) are kept apart so a snapshot taken on a user's box replays anywhere:
``fidoctor snapshot -o FILE`` then ``fidoctor diagnose --from FILE``.

Each gatherer fills one *section*. A section records how gathering went
(``status``: ok, timeout, denied, absent, error) as a fact in its own right,
so a probe can say "inconclusive because …" instead of crashing.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from fidoctor import __version__
from fidoctor.errors import FidoctorError

SCHEMA_VERSION = 1
STATUSES = ("ok", "timeout", "denied", "absent", "error", "skipped")


@dataclass
class Section:
    status: str  # one of STATUSES; anything else is refused (a corrupt or foreign snapshot)
    data: Dict[str, Any] = field(default_factory=dict)
    error: str = ""
    elapsed_s: float = 0.0

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"section status {self.status!r} is not one of {', '.join(STATUSES)}")

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# What diagnose copies into ``target`` (and into printed commands: ``--pid``, ``--python``).
_CONTEXT_TYPES: Dict[str, Any] = {"python": (str,), "python_source": (str,), "pid": (int,),
                                  "flashinfer_root": (str,), "env": (dict,)}


@dataclass
class Snapshot:
    """Facts about one machine at one moment; ``taken_at`` anchors every age."""

    context: Dict[str, Any]
    sections: Dict[str, Section] = field(default_factory=dict)
    taken_at: float = field(default_factory=time.time)
    schema_version: int = SCHEMA_VERSION
    fidoctor_version: str = __version__

    def section(self, name: str) -> Optional[Section]:
        return self.sections.get(name)

    def data(self, name: str) -> Dict[str, Any]:
        """The section's data, or {} when it is missing or was not gathered fully."""
        s = self.sections.get(name)
        return s.data if s is not None and s.ok else {}

    def to_dict(self) -> Dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "fidoctor_version": self.fidoctor_version,
            "taken_at": self.taken_at,
            "context": self.context,
            # Shallow (the data is shared, not deep-copied): a 10,000-module snapshot is
            # tens of MB, and asdict's copy cost seconds; callers copy what they change.
            "sections": {k: {"status": v.status, "data": v.data, "error": v.error,
                             "elapsed_s": v.elapsed_s} for k, v in self.sections.items()},
        }

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> Snapshot:
        """Build a snapshot from its JSON form; anything off-shape is a one-line error."""
        hint = "write one with: fidoctor snapshot -o snapshot.json"
        if not isinstance(d, dict):
            raise FidoctorError("not a fidoctor snapshot: not a JSON object", hint)
        version = d.get("schema_version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise FidoctorError(f"not a fidoctor snapshot: schema_version {version!r}", hint)
        if version > SCHEMA_VERSION:
            raise FidoctorError(
                f"snapshot schema_version {version!r} is newer than this fidoctor "
                f"understands ({SCHEMA_VERSION})",
                "upgrade fidoctor: pip install -U fidoctor",
            )
        context, sections, taken = d.get("context"), d.get("sections"), d.get("taken_at")
        if not isinstance(context, dict) or not isinstance(sections, dict):
            raise FidoctorError("not a fidoctor snapshot: context and sections must be objects",
                                hint)
        for key, types in _CONTEXT_TYPES.items():
            val = context.get(key)
            if val is not None and (isinstance(val, bool) and bool not in types
                                    or not isinstance(val, types)
                                    or key == "pid" and not 0 < val < 1 << 32):
                raise FidoctorError(f"not a fidoctor snapshot: context.{key} {str(val)[:80]!r}",
                                    hint)
        if isinstance(taken, bool) or not isinstance(taken, (int, float)) \
                or not -6e10 < taken < 2.5e11:  # NaN, inf, 1e308: no clock shows them
            raise FidoctorError(f"not a fidoctor snapshot: taken_at {taken!r}", hint)
        out: Dict[str, Section] = {}
        for name, v in sections.items():
            if not isinstance(v, dict) or v.get("status") not in STATUSES \
                    or not isinstance(v.get("data", {}), dict) \
                    or not isinstance(v.get("error", ""), str) \
                    or isinstance(v.get("elapsed_s", 0.0), bool) \
                    or not isinstance(v.get("elapsed_s", 0.0), (int, float)):
                raise FidoctorError(f"not a fidoctor snapshot: section {str(name)[:80]!r} is "
                                    "not {status, data, error, elapsed_s}", hint)
            out[name] = Section(status=v["status"], data=v.get("data", {}),
                                error=v.get("error", ""), elapsed_s=float(v.get("elapsed_s", 0)))
        return cls(context=dict(context), sections=out, taken_at=float(taken),
                   schema_version=version, fidoctor_version=str(d.get("fidoctor_version", "?")))

    def save(self, path: str) -> None:
        """Write the snapshot (mode 0600: it may hold paths and names) through safeio."""
        from fidoctor.safeio import write_atomic

        write_atomic(path, dumps(self.to_dict()).encode("utf-8"), 0o600, what="snapshot")

    @classmethod
    def load(cls, path: str) -> Snapshot:
        """Read ``path`` (a regular file under the size and depth caps) as a snapshot."""
        from fidoctor.safeio import SNAPSHOT_CAP, loads_json, read_bytes

        raw = loads_json(read_bytes(path, SNAPSHOT_CAP, what="snapshot"), path,
                         noun="a JSON snapshot")
        if not isinstance(raw, dict):
            raise FidoctorError(f"{path} is not a JSON object, so not a fidoctor snapshot")
        return cls.from_dict(raw)


# Containers at least this deep are written on one line unless they hold more than
# _ONE_LINE_MAX items: a 10,000-module snapshot gets one line per module, lock or ELF entry.
_ONE_LINE_DEPTH = 6
_ONE_LINE_MAX = 16


def dumps(doc: Any) -> str:
    """``doc`` as the text of a snapshot file: sorted keys, indented, and a newline at the end.

    The same JSON value as ``json.dumps(doc, indent=1, sort_keys=True)`` (any reader, old
    fidoctor included, loads the same object), written faster: that call runs the encoder
    in Python for every one of a 10,000-module snapshot's million items (1.3 s for 65 MB);
    here only the top levels and big collections are laid out in Python, one item a line,
    and each small or deep container is one line by the C encoder.
    """
    enc = json.JSONEncoder(sort_keys=True, separators=(",", ": ")).encode
    parts: list = []
    put = parts.append

    def key(k: Any) -> str:  # json's own text for a key: "1" for 1, "true" for True
        return enc(k) if type(k) is str else enc({k: 0})[1:-4]

    def write(o: Any, depth: int) -> None:
        if not isinstance(o, (dict, list, tuple)) or not o \
                or (depth >= _ONE_LINE_DEPTH and len(o) <= _ONE_LINE_MAX):
            put(enc(o))
            return
        pad = "\n" + " " * (depth + 1)
        sep = "," + pad
        if isinstance(o, dict):
            put("{")
            for i, k in enumerate(sorted(o)):
                put(sep if i else pad)
                put(key(k))
                put(": ")
                write(o[k], depth + 1)
            put("\n" + " " * depth + "}")
        else:
            put("[")
            for i, x in enumerate(o):
                put(sep if i else pad)
                write(x, depth + 1)
            put("\n" + " " * depth + "]")

    write(doc, 0)
    put("\n")
    return "".join(parts)
