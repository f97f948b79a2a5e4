"""``warmup --check`` and ``diagnose`` agree, module by module, on the cache kinds the suite
builds (issue 17's "Done when"), so a future drift in either fails here.

Each case is a real box (conftest.Box: a gcc-built ``.so`` for a good module, real files for
the broken kinds, real FlashInfer log lines, a real ``flock`` holder), run through both real
CLIs. The rules: ``incomplete`` exactly where diagnose reports cache-incomplete-module;
``load-failed`` exactly where it reports jit-log-unfinished with verdict load-failed; and
``ok`` never where diagnose reports a warning or error about that module (its dir, or its
lock). Found by QA: a good module whose lock a live process held was "ok" here and
build-lock-held there.
"""

from __future__ import annotations

import json
import os
import time
from typing import Dict, List, Set

import pytest
from conftest import log_line, run_cli
from warmup_helpers import hold_flock, kill_and_wait

KINDS = ("good", "missing", "empty", "text", "truncated")


def _kinds(box) -> List:
    ws = box.workspace()
    for kind in KINDS:
        for dep in (0, 1):
            for obj in (0, 1, 3):
                box.module(ws, f"m_{kind}_d{dep}_o{obj}", so=kind, depfiles=dep, objects=obj,
                           ninja_lock=bool(obj == 3))
    return []


def _layouts(box) -> List:
    box.module(box.workspace(version=None, arch="90"), "a_good")
    box.module(box.workspace(version=None, arch=None), "b_good")
    box.module(box.workspace(arch="80"), "c_missing", so="missing", objects=1)
    box.module(box.workspace(version="0.2.5"), "d_truncated", so="truncated")
    return []


def _logs(box) -> List:
    now = time.time()
    ws = box.workspace()
    box.module(ws, "good_unfinished")
    box.module(ws, "missing_unfinished", so="missing", objects=1)
    box.module(ws, "good_finished")
    box.log(ws, [log_line("new", "loading", "good_unfinished", now - 100),
                 log_line("new", "loading", "missing_unfinished", now - 90),
                 log_line("new", "loading", "good_finished", now - 80),
                 log_line("new", "finished", "good_finished", now - 70)])
    old = box.workspace(version="0.2.5")
    box.module(old, "old_good_unfinished")
    box.log(old, [log_line("old", "loading", "old_good_unfinished", now - 60)])
    return []


def _held(box) -> List:
    ws = box.workspace()
    out = []
    for name, kind in (("held_good", "good"), ("held_missing", "missing"),
                       ("held_truncated", "truncated"), ("free_good", "good")):
        box.module(ws, name, so=kind, objects=2)
        if name.startswith("held"):
            out.append(hold_flock(ws / "cached_ops" / "tmp" / f"{name}.lock"))
    return out


def _module_findings(findings: List[dict], dirs: Dict[str, str]) -> Dict[str, Set[str]]:
    """Finding ids (with a load-failed verdict marked) per module dir: by data.module_dir,
    or by a lock subject ``…/cached_ops/tmp/<name>.lock`` of that workspace."""
    out: Dict[str, Set[str]] = {d: set() for d in dirs}
    for f in findings:
        data = f.get("data") or {}
        tag = f["id"] + ("/load-failed" if data.get("verdict") == "load-failed" else "")
        hit = os.path.normpath(data.get("module_dir") or "")
        subj = f.get("subject") or ""
        if hit not in out and subj.endswith(".lock"):
            ops = os.path.dirname(os.path.dirname(subj))
            hit = os.path.join(ops, os.path.basename(subj)[:-len(".lock")])
        if hit in out:
            out[hit].add(f"{tag}:{f['severity']}")
    return out


@pytest.mark.parametrize("build", [_kinds, _layouts, _logs, _held],
                         ids=["so-kinds", "layouts", "jit-logs", "held-locks"])
def test_check_and_diagnose_agree_module_by_module(box, tmp_path, build):
    holders = build(box)
    env = box.env(XDG_STATE_HOME=str(tmp_path / "state"))
    try:
        c = run_cli(["warmup", "--check", "--json"], env=env)
        d = run_cli(["diagnose", "--json"], env=env)
    finally:
        for p in holders:
            kill_and_wait(p)
    assert c.returncode in (0, 1) and d.returncode in (0, 1), (c.stderr, d.stderr)
    rows = {os.path.normpath(m["dir"]): m for w in json.loads(c.stdout)["workspaces"]
            for m in w["modules"]}
    assert rows, c.stdout
    per = _module_findings(json.loads(d.stdout)["findings"], {k: "" for k in rows})
    wrong = []
    for path, m in sorted(rows.items()):
        ids = per[path]
        incomplete = any(i.startswith("cache-incomplete-module:") for i in ids)
        unloadable = any(i.startswith("jit-log-unfinished/load-failed:") for i in ids)
        loud = [i for i in ids if not i.endswith(":info")]
        if (m["state"] == "incomplete") != incomplete \
                or (m["state"] == "load-failed") != unloadable \
                or (m["state"] == "ok" and loud):
            wrong.append((m["name"], m["state"], sorted(ids)))
    assert wrong == [], wrong
    assert (c.returncode == 1) == any(m["state"] in ("incomplete", "load-failed")
                                      for m in rows.values())
