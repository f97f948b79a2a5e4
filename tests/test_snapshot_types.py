"""The typed shapes of the main snapshot sections (fidoctor/snapshot/types.py) say what the
gatherers really write: every key of a real snapshot's target, host, cache, processes, oom and
locks sections (a real box: modules good, missing and truncated, a baton, lock files, a live
Python holding a real flock) is declared in its TypedDict, recursively.

A gatherer that starts writing a new key fails here until the key is declared, so probes can
rely on the types they import.
"""

from __future__ import annotations

import re
import typing
from typing import Any, List, Union

from conftest import DECODE, FA2, FA3, snapshot_of
from proc_helpers import make_fifo, start_server, write_module

from fidoctor.snapshot import types as T
from fidoctor.snapshot.sections import cache, host, locks, processes, target

SECTIONS = {"target": T.TargetFacts, "host": T.HostFacts, "cache": T.CacheFacts,
            "processes": T.ProcessesFacts, "locks": T.LocksFacts, "oom": T.OomFacts}


def _is_typeddict(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__total__")


def undeclared(value: Any, tp: Any, path: str) -> List[str]:
    """Paths in ``value`` whose keys ``tp`` does not declare."""
    if _is_typeddict(tp):
        if not isinstance(value, dict):
            return []
        hints = typing.get_type_hints(tp)
        out = [f"{path}.{k}" for k in value if k not in hints]
        for k, v in value.items():
            if k in hints:
                out += undeclared(v, hints[k], f"{path}.{k}")
        return out
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union:
        best = None
        for a in args:
            if a is type(None):
                continue
            got = undeclared(value, a, path)
            if best is None or len(got) < len(best):
                best = got
        return best or []
    if origin is list and isinstance(value, list) and args:
        return [p for i, v in enumerate(value) for p in undeclared(v, args[0], f"{path}[{i}]")]
    if origin is dict and isinstance(value, dict) and len(args) == 2:
        return [p for k, v in value.items() for p in undeclared(v, args[1], f"{path}[{k}]")]
    return []


def test_real_snapshot_sections_use_only_declared_keys(box, procs, tmp_path):
    ws = box.workspace()
    box.module(ws, DECODE)
    box.module(ws, FA2, so="missing", objects=2, depfiles=1, ninja_lock=True)
    box.module(ws, FA3, so="truncated")
    (ws / "cached_ops" / FA3 / "lock").write_text("")  # a torch FileBaton (FlashInfer <= 0.2.5)
    # A real build in flight: a Python server holding the module's flock runs a real ninja
    # whose compile step (a gcc-built stand-in named nvcc) blocks on a FIFO.
    fifo = make_fifo(tmp_path / "never.fifo")
    write_module(ws, DECODE + "_live", f"--fifo {fifo}")
    start_server(procs, ws, DECODE + "_live", box.env())
    procs.find("nvcc")
    snap = snapshot_of(box)
    for name, tp in SECTIONS.items():
        sec = snap.section(name)
        assert sec is not None and sec.ok, (name, sec and sec.status)
        missing = undeclared(sec.data, tp, name)
        assert missing == [], sorted({re.sub(r"\[[^]]*\]", "[]", m) for m in missing})
    # The typed views are the same data, not copies.
    assert cache(snap) is snap.data("cache") and target(snap) is snap.data("target")
    assert host(snap)["cpu_count"] and processes(snap) is snap.data("processes")
    assert any(lk.get("holders") for lk in locks(snap)["locks"])
    assert any(p.get("name") == "ninja" for p in processes(snap)["processes"])
    mods = {m["name"]: m for w in cache(snap)["workspaces"] for m in w["modules"]}
    assert mods[FA3]["so"] and mods[FA3]["so"]["problem"] and mods[FA2]["so"] is None


def test_the_walk_catches_an_undeclared_key():
    data = {"root": "/x", "workspaces": [{"path": "/x/90", "modules": [{"name": "m", "oops": 1}]}]}
    assert undeclared(data, T.CacheFacts, "cache") == ["cache.workspaces[0].modules[0].oops"]
