"""``fidoctor cache import``: check everything, write nothing until it all holds, then install.

1. Check (nothing written): the manifest against the target (FlashInfer
   version, arch, CUDA major.minor: target.mismatches); every member of the
   tar against the manifest (bundle.iter_files: names, types, sizes, sha256);
   every source and header each object was compiled from, at the path the
   target's ninja will look (paths.PathMap), against the digest the builder
   recorded — the same bytes with a newer mtime (a pip reinstall) is fine, any
   other content or a missing file means the target would build it
   differently, and the bundle is refused; modules already in the target's
   cache are refused unless ``--replace``.
2. Stage: unpack into ``<workspace>/fidoctor-import/<txid>/`` (same file
   system), rewrite ``build.ninja`` for the target's paths and ``cuda_home``,
   ask the target's ninja for each edge's command (``-t compdb``), and write
   ``.ninja_log`` (those commands' hashes, in the target ninja's log version)
   and ``.ninja_deps`` (the target's paths); set the outputs' mtimes to one
   instant no older than any input.
3. Install through the transaction layer (``move-in`` steps, a ``move-aside``
   first for a replaced module), so ``fidoctor undo`` takes it all out again.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Set

from fidoctor.cachebundle import bundle, graph, manifest, ninjafiles
from fidoctor.cachebundle.paths import PathMap
from fidoctor.cachebundle.target import Target, mismatches
from fidoctor.errors import FidoctorError

STAGING = "fidoctor-import"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+\-]{0,250}$")


class ImportRefused(FidoctorError):
    """The bundle does not fit the target (exit 2, nothing written)."""


@dataclass
class ImportResult:
    bundle: str
    workspace: str
    txid: str = ""
    modules: List[str] = field(default_factory=list)
    replaced: List[str] = field(default_factory=list)
    files: int = 0
    notes: List[str] = field(default_factory=list)


def _modules(doc: Dict[str, Any]) -> List[Dict[str, Any]]:
    if doc.get("format") != manifest.FORMAT:
        raise bundle.BundleError("not a fidoctor cache bundle (format field)")
    if doc.get("format_version") != manifest.FORMAT_VERSION:
        raise bundle.BundleError(f"bundle format {doc.get('format_version')!r}; this fidoctor "
                                 f"reads {manifest.FORMAT_VERSION}")
    mods = doc.get("modules")
    if not isinstance(mods, list) or not mods or not isinstance(doc.get("source"), dict):
        raise bundle.BundleError("manifest has no modules or no source facts")
    src = doc["source"]
    odd = next((k for k, v in src.items() if not (
        v is None or isinstance(v, str) or (k == "ninja_log_version" and type(v) is int)
        or (k == "build_env" and isinstance(v, dict)
            and all(isinstance(x, str) for x in v.values())))), None)
    if odd:
        raise bundle.BundleError(f"manifest source fact {str(odd)[:80]!r} has the wrong type "
                                 "(damaged or not written by fidoctor cache export)")
    keys = ("name", "so", "so_sha256", "files", "ninja_log", "deps", "inputs")
    for m in mods:
        if not isinstance(m, dict) or any(k not in m for k in keys):
            raise bundle.BundleError("manifest module entry is malformed")
        name = m["name"]
        if not isinstance(name, str) or not _NAME.match(name) or name == "tmp":
            raise bundle.BundleError(f"manifest module name {str(name)[:80]!r} is not a plain "
                                     "module name")
        bad = _mistyped(m)
        if bad:
            raise bundle.BundleError(f"manifest of {name}: {bad} has the wrong type "
                                     "(damaged or not written by fidoctor cache export)")
        for fe in m["files"]:
            p = fe.get("path", "") if isinstance(fe, dict) else ""
            bundle._check_name(p)
            top = p.split("/", 2)
            if len(top) < 2 or top[0] not in ("cached_ops", "generated") or \
                    (top[0] == "cached_ops" and (top[1] != name or len(top) < 3)):
                raise bundle.BundleError(f"manifest file {p!r} is outside {name}'s dirs")
    return mods


def _mistyped(m: Dict[str, Any]) -> Optional[str]:
    """The first field of a module entry that is not of the type ModuleManifest declares."""
    def strs(d: Any, value: Any) -> bool:
        return isinstance(d, dict) and all(isinstance(k, str) and isinstance(v, value)
                                           for k, v in d.items())

    checks = {
        "so": isinstance(m["so"], str), "so_sha256": isinstance(m["so_sha256"], str),
        "files": isinstance(m["files"], list) and all(
            isinstance(fe, dict) and isinstance(fe.get("path"), str)
            and isinstance(fe.get("sha256"), str)
            and all(type(fe.get(k, 0)) is int for k in ("size", "mode", "mtime_ns"))
            for fe in m["files"]),
        "ninja_log": isinstance(m["ninja_log"], list) and all(
            isinstance(e, dict) and isinstance(e.get("output"), str)
            and all(type(e.get(k, 0)) is int for k in ("start", "end", "mtime"))
            for e in m["ninja_log"]),
        "deps": strs(m["deps"], list) and all(isinstance(x, str) for v in m["deps"].values()
                                              for x in v),
        "inputs": strs(m["inputs"], str),
        "gencode": isinstance(m.get("gencode", []), list),
        "ninja_log_version": m.get("ninja_log_version") is None
        or type(m.get("ninja_log_version")) is int,
    }
    return next((k for k, ok in checks.items() if not ok), None)


def _expected(mods: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    out: Dict[str, Dict[str, Any]] = {}
    for m in mods:
        so_ok = False
        for fe in m["files"]:
            prev = out.get(fe["path"])
            if prev is not None and prev["sha256"] != fe["sha256"]:
                raise bundle.BundleError(f"manifest lists {fe['path']} twice, differently")
            out[fe["path"]] = fe
            so_ok |= fe["path"] == m["so"] and fe["sha256"] == m["so_sha256"]
        if not so_ok:
            raise bundle.BundleError(f"{m['name']}: the manifest's .so digest and file list "
                                     "disagree (tampered)")
    return out


def check(t: Target, path: str, replace: bool) -> Dict[str, Any]:
    """Everything step 1 checks; returns the plan or raises (nothing written)."""
    t.require_usable("import")
    doc = bundle.read_manifest(path)
    mods = _modules(doc)
    wrong = mismatches(doc["source"], t)
    if wrong:
        raise ImportRefused("refused: the bundle does not fit the target: " + "; ".join(wrong),
                            "build the bundle in an image with the same FlashInfer, CUDA "
                            "toolkit and --arch as the runtime")
    expected = _expected(mods)
    for _rel, _data in bundle.iter_files(path, expected):
        pass
    assert t.workspace
    ws = os.path.realpath(t.workspace)
    pm = PathMap(doc["source"], t, ws)
    digests = manifest.DigestCache()
    problems: List[str] = []
    existing: List[str] = []
    for m in mods:
        mdir = os.path.join(ws, "cached_ops", m["name"])
        if os.path.lexists(mdir):
            existing.append(m["name"])
        for src, sha in sorted(m["inputs"].items()):
            rel = pm.shipped(src)
            if rel is not None:
                fe = expected.get(rel)
                if fe is None or fe["sha256"] != sha:
                    problems.append(f"{m['name']}: {rel} is an input but not shipped intact")
                    continue
                here = os.path.join(ws, rel)
                if os.path.lexists(here) and digests.get(here) != sha:
                    problems.append(f"{m['name']}: {here} exists in the target with other "
                                    "content (FlashInfer would compile that instead)")
                continue
            dst = pm.map(src)
            got = digests.get(dst)
            if got is None:
                problems.append(f"{m['name']}: {dst} is missing in the target (built from "
                                f"{src})")
            elif got != sha:
                problems.append(f"{m['name']}: {dst} differs from the {src} it was built "
                                "from: the target would build it differently")
    if existing and not replace:
        problems.append(f"already in {ws}/cached_ops: {', '.join(existing)} (pass --replace "
                        "to move them aside, undoably)")
    if problems:
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ImportRefused("refused, nothing written: " + "; ".join(problems[:5]) + more)
    return {"doc": doc, "mods": mods, "expected": expected, "ws": ws, "pm": pm,
            "existing": existing, "digests": digests}


def stage(t: Target, path: str, plan: Dict[str, Any], staging: str) -> Dict[str, List[str]]:
    """Unpack and rewrite into ``staging``; returns {"modules": [...], "generated": [...]}."""
    ws, pm, mods = plan["ws"], plan["pm"], plan["mods"]
    os.makedirs(staging, 0o755)
    for rel, data in bundle.iter_files(path, plan["expected"]):
        dst = os.path.join(staging, rel)
        os.makedirs(os.path.dirname(dst), 0o755, exist_ok=True)
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     plan["expected"][rel]["mode"] & 0o755 | 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    assert t.ninja and t.log_version
    newest = time.time_ns()
    for m in mods:
        for src in m["inputs"]:
            if pm.shipped(src) is None:
                newest = max(newest, os.stat(pm.map(src)).st_mtime_ns)
    for rel, fe in plan["expected"].items():
        if rel.startswith("generated/"):
            os.utime(os.path.join(staging, rel), ns=(fe["mtime_ns"], fe["mtime_ns"]))
            newest = max(newest, fe["mtime_ns"])
    stamp = newest
    for m in mods:
        _rewrite_module(t, m, pm, os.path.join(staging, "cached_ops", m["name"]),
                        os.path.join(ws, "cached_ops", m["name"]), stamp)
    gen: Set[str] = set()
    for rel in plan["expected"]:
        if rel.startswith("generated/"):
            gen.add("/".join(rel.split("/")[:2]))
    return {"modules": [m["name"] for m in mods], "generated": sorted(gen)}


def _rewrite_module(t: Target, m: Dict[str, Any], pm: PathMap, sdir: str, final: str,
                    stamp: int) -> None:
    bn = os.path.join(sdir, "build.ninja")
    with open(bn, "rb") as f:
        text = f.read().decode("utf-8", "surrogateescape")
    new = pm.sub_text(text)
    with open(bn, "wb") as f:
        f.write(new.encode("utf-8", "surrogateescape"))
    assert t.ninja and t.log_version
    edges = graph.compdb(t.ninja, bn)
    by_out = {e["output"]: e for e in edges}
    want = {pm.map(le["output"]): le for le in m["ninja_log"]}
    if set(by_out) != set(want):
        raise FidoctorError(f"{m['name']}: the rewritten build.ninja has other outputs than "
                            "the bundle's log (unexpected layout); nothing was installed")
    for o in by_out:
        if os.path.dirname(o) != final:
            raise FidoctorError(f"{m['name']}: output {o} is outside {final}")
    entries = [(want[o]["start"], want[o]["end"], stamp, o,
                ninjafiles.hash_command(by_out[o]["command"], t.log_version)) for o in sorted(
                    by_out, key=lambda o: want[o]["end"])]
    records = [(pm.map(out), stamp, [pm.map(d) for d in deps])
               for out, deps in sorted(m["deps"].items())]
    _write(os.path.join(sdir, ".ninja_log"), ninjafiles.write_log(t.log_version, entries))
    _write(os.path.join(sdir, ".ninja_deps"), ninjafiles.write_deps(records))
    for n in os.listdir(sdir):
        if n not in ("build.ninja", ".ninja_log", ".ninja_deps"):
            os.utime(os.path.join(sdir, n), ns=(stamp, stamp))


def _write(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def import_bundle(t: Target, path: str, replace: bool = False,
                  state: Optional[str] = None) -> ImportResult:
    """Check, stage, install (journalled); FidoctorError (exit 2) with nothing written."""
    from fidoctor.paths import state_dir
    from fidoctor.txn import FixLock, apply_steps
    from fidoctor.txn.journal import new_txid
    from fidoctor.txn.movein import MoveIn, Staging
    from fidoctor.txn.steps import quarantine_step

    plan = check(t, path, replace)
    ws = plan["ws"]
    state = state or state_dir()
    txid = new_txid()
    staging = os.path.join(ws, STAGING, txid)
    res = ImportResult(bundle=path, workspace=ws, txid=txid)
    try:
        try:
            staged = stage(t, path, plan, staging)
        except OSError as e:
            raise FidoctorError(f"cannot unpack into {staging}: {e.strerror or e}; nothing was "
                                "installed", "free some space (df -h) or check permissions "
                                "on the workspace") from None
        steps: List[Any] = [Staging(staging, ws)]
        for name in staged["modules"]:
            dst = os.path.join(ws, "cached_ops", name)
            if name in plan["existing"]:
                steps.append(quarantine_step(dst, txid, ws))
                res.replaced.append(name)
            steps.append(MoveIn(os.path.join(staging, "cached_ops", name), dst, ws))
        for g in staged["generated"]:
            dst = os.path.join(ws, g)
            if not os.path.lexists(dst):
                steps.append(MoveIn(os.path.join(staging, g), dst, ws))
                continue
            if not os.path.isdir(os.path.join(staging, g)):
                continue  # a file already there with the same bytes (checked)
            for n in sorted(os.listdir(os.path.join(staging, g))):
                if not os.path.lexists(os.path.join(dst, n)):
                    steps.append(MoveIn(os.path.join(staging, g, n), os.path.join(dst, n), ws))
        header = {"command": "cache import", "fix": "cache-import", "bundle": path,
                  "modules": [os.path.join(ws, "cached_ops", n) for n in staged["modules"]],
                  "time": time.time()}
        with FixLock(state, "fidoctor cache import", wait_s=10.0):
            apply_steps(state, steps, header, txid=txid)
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging)  # what is left there are our copies not needed
        _rmdir_quietly(os.path.join(ws, STAGING))
    res.modules = staged["modules"]
    res.files = len(plan["expected"])
    return res


def _rmdir_quietly(d: str) -> None:
    try:
        os.rmdir(d)
    except OSError:
        pass
