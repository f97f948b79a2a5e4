"""``fidoctor cache export``: the target's compiled modules and the facts to check them by.

Only modules that are up to date in their own workspace ship: each one's
``.ninja_log`` must hold, for every output, the hash of the command its
``build.ninja`` gives now (the same test ninja applies), and every source
and header its depfiles name must be readable here so its digest can go in
the manifest. A module that fails either is listed as skipped with the
reason; export fails (exit 2) only when nothing can ship.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from fidoctor import __version__
from fidoctor.cachebundle import bundle, manifest
from fidoctor.cachebundle.target import Target
from fidoctor.errors import FidoctorError
from fidoctor.txn.safety import sha256_file


@dataclass
class ExportResult:
    path: str
    modules: List[str] = field(default_factory=list)
    skipped: Dict[str, str] = field(default_factory=dict)
    bytes_written: int = 0
    compressed: bool = False


def module_names(ws: str, wanted: Optional[List[str]]) -> List[str]:
    """The module dirs of ``ws`` (or ``wanted``: names, or warmup specs such as decode:f16)."""
    ops = os.path.join(ws, "cached_ops")
    try:
        present = sorted(n for n in os.listdir(ops) if n != "tmp" and not n.startswith(".")
                         and os.path.isdir(os.path.join(ops, n))
                         and not os.path.islink(os.path.join(ops, n)))
    except FileNotFoundError:
        present = []
    if not wanted:
        return present
    from fidoctor.warmup.specs import parse_spec

    out = []
    for w in wanted:
        name = w if (w in present or "_" in w) else parse_spec(w).expected_name()
        if name not in present:
            raise FidoctorError(f"--modules {w}: no module {name} in {ops}",
                                "list them with: fidoctor warmup --check")
        out.append(name)
    return out


def source_facts(t: Target) -> Dict[str, Any]:
    d = t.to_dict()
    d.pop("problems", None)
    d["workspace"] = os.path.realpath(t.workspace or "")
    d["ninja_log_version"] = t.log_version
    return d


def _write_error(out_path: str, e: OSError) -> FidoctorError:
    """A full disk, a read-only or unwritable output dir: one line, the partial file gone."""
    return FidoctorError(f"cannot write {out_path}: {e.strerror or e}; nothing was written "
                         "(the partial bundle was removed)",
                         "free some space (df -h) or pick another path with -o FILE")


def export(t: Target, out_path: str, wanted: Optional[List[str]] = None,
           env: Optional[Dict[str, str]] = None) -> ExportResult:
    """Write the bundle; ``env`` is the target's environment (what FlashInfer built under)."""
    t.require_usable("export")
    env = dict(os.environ if env is None else env)
    assert t.workspace and t.ninja
    ws = os.path.realpath(t.workspace)
    names = module_names(ws, wanted)
    if not names:
        raise FidoctorError(f"no compiled modules in {ws}",
                            "warm up first: fidoctor warmup --arch 9.0a")
    digests = manifest.DigestCache()
    res = ExportResult(out_path, compressed=bundle.wants_zstd(out_path))
    mods: List[manifest.ModuleManifest] = []
    for n in names:
        try:
            mods.append(manifest.describe_module(ws, n, t.ninja, env, digests))
        except FidoctorError as e:
            if wanted:
                raise
            res.skipped[n] = e.message
    if not mods:
        raise FidoctorError(f"no module in {ws} can ship: "
                            + "; ".join(res.skipped.values()))
    doc = {"format": manifest.FORMAT, "format_version": manifest.FORMAT_VERSION,
           "fidoctor_version": __version__, "created_at": time.time(),
           "source": source_facts(t), "modules": mods}
    try:
        w = bundle.Writer(out_path)
    except OSError as e:
        raise _write_error(out_path, e) from None
    try:
        w.add_bytes(bundle.MANIFEST, bundle.dumps(doc))
        written = set()
        for m in mods:
            for fe in m["files"]:
                if fe["path"] in written:
                    continue
                written.add(fe["path"])
                src = os.path.join(ws, fe["path"])
                if sha256_file(src) != fe["sha256"]:
                    raise FidoctorError(f"{src} changed while exporting; nothing was written")
                w.add_file(bundle.PREFIX + fe["path"], src, fe["mode"], fe["mtime_ns"])
        w.close()
    except OSError as e:
        w.abort()
        raise _write_error(out_path, e) from None
    except BaseException:
        w.abort()
        raise
    res.modules = [m["name"] for m in mods]
    res.bytes_written = os.path.getsize(out_path)
    return res
