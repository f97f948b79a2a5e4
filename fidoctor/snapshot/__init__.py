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
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Optional

from fidoctor import __version__
from fidoctor.errors import FidoctorError

SCHEMA_VERSION = 1
STATUSES = ("ok", "timeout", "denied", "absent", "error", "skipped")


@dataclass
class Section:
    status: str
    data: Dict[str, Any] = field(default_factory=dict)
    error: str = ""
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


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
            "sections": {k: asdict(v) for k, v in self.sections.items()},
        }

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> Snapshot:
        try:
            version = d["schema_version"]
            if not isinstance(version, int) or version > SCHEMA_VERSION:
                raise FidoctorError(
                    f"snapshot schema_version {version!r} is newer than this fidoctor "
                    f"understands ({SCHEMA_VERSION})",
                    "upgrade fidoctor: pip install -U fidoctor",
                )
            return cls(
                context=dict(d["context"]),
                sections={k: Section(**v) for k, v in d["sections"].items()},
                taken_at=float(d["taken_at"]),
                schema_version=version,
                fidoctor_version=str(d.get("fidoctor_version", "?")),
            )
        except FidoctorError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise FidoctorError(
                f"not a fidoctor snapshot: {type(e).__name__}: {e}",
                "write one with: fidoctor snapshot -o snapshot.json",
            ) from None

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=1, sort_keys=True)
            f.write("\n")

    @classmethod
    def load(cls, path: str) -> Snapshot:
        try:
            with open(path, encoding="utf-8") as f:
                raw = json.load(f)
        except OSError as e:
            raise FidoctorError(f"cannot read snapshot {path}: {e.strerror or e}") from None
        except (ValueError, UnicodeDecodeError) as e:
            raise FidoctorError(
                f"{path} is not a JSON snapshot ({e})",
                "write one with: fidoctor snapshot -o snapshot.json",
            ) from None
        if not isinstance(raw, dict):
            raise FidoctorError(f"{path} is not a JSON object, so not a fidoctor snapshot")
        return cls.from_dict(raw)
