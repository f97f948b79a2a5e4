"""0.2.x: an unfinished ``Loading JIT ops`` line over a complete ``.so`` is a failed load.

FlashInfer 0.2.0–0.2.5 logs ``Finished loading JIT ops`` only after torch has built *and
loaded* the module, so a dead server whose log stops at ``Loading`` while its ``.so`` is
complete failed to load it (the seed's undefined ``cudaGetDriverEntryPointByVersion``), it
did not hang in a build. Real parts: the cudart seed box (real gcc-built module ELF files
linked against a real libcudart 12.9 from NVIDIA's wheel, a venv with pip's 12.4.127 runtime
and the stand-in torch that cudart_helpers documents) and the real dynamic loader, which
confirms the load really fails where fidoctor says so.
"""

from __future__ import annotations

import json
import time

import pytest
from conftest import log_line, run_cli
from cudart_helpers import BYVERSION_MOD, PLAIN_MOD, WHEEL_12_9, Seed, real_load

pytestmark = pytest.mark.timeout(180)


def _diagnose(seed: Seed):
    r = run_cli(["diagnose", "--python", str(seed.v["python"]), "--json"], env=seed.env())
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)


def _log(seed: Seed, lines):
    ws = seed.base / ".cache" / "flashinfer" / "90"
    with open(ws / "flashinfer_jit.log", "a") as f:
        f.writelines(lines)


def _lines(now: float):
    # Half an hour back: the titles say "30 min ago" for a whole minute, so diagnose and
    # warmup --check, a few seconds apart, print the same title (at 120 s they straddled
    # the "119 s"/"2 min" step).
    return [log_line("old", "loading", PLAIN_MOD, now - 2000),
            log_line("old", "finished", PLAIN_MOD, now - 1999),
            log_line("old", "loading", BYVERSION_MOD, now - 1800)]


def test_unfinished_loading_over_a_complete_so_is_a_load_failure_with_its_cause(tmp_path):
    seed = Seed(tmp_path)
    assert real_load(seed.v["python"], seed.modules[BYVERSION_MOD], seed.env())["ok"] is False
    _log(seed, _lines(time.time()))
    doc = _diagnose(seed)
    [f] = [f for f in doc["findings"] if f["id"] == "jit-log-unfinished"]
    assert f["data"]["module"] == BYVERSION_MOD and f["data"]["verdict"] == "load-failed"
    assert "failed to load" in f["title"] and "never finished" not in f["title"]
    assert f["caused_by"] == "cudart-missing-symbol"
    cmds = " ".join(c for x in f["fixes"] for c in x["commands"])
    assert "fidoctor warmup" not in cmds, "a rebuild gives the same file"
    order = [x["id"] for x in doc["findings"]]
    assert order.index("cudart-missing-symbol") < order.index("jit-log-unfinished")


def test_the_same_log_with_a_runtime_that_has_the_symbol_names_no_cause(tmp_path):
    """The twin: the runtime exports the symbol, so no ELF probe fires; the verdict is still a
    failed load (the log says so), offering the loader's own error, not a rebuild."""
    seed = Seed(tmp_path, runtime=WHEEL_12_9)
    _log(seed, _lines(time.time()))
    doc = _diagnose(seed)
    assert "cudart-missing-symbol" not in {f["id"] for f in doc["findings"]}
    [f] = [f for f in doc["findings"] if f["id"] == "jit-log-unfinished"]
    assert f["data"]["verdict"] == "load-failed" and not f.get("caused_by")
    assert any("torch.ops.load_library" in c for x in f["fixes"] for c in x["commands"])


def test_unfinished_loading_without_a_so_is_still_an_unfinished_build(tmp_path):
    seed = Seed(tmp_path)
    (seed.modules[BYVERSION_MOD]).unlink()
    _log(seed, _lines(time.time()))
    doc = _diagnose(seed)
    [f] = [f for f in doc["findings"] if f["id"] == "jit-log-unfinished"]
    assert "never finished" in f["title"] and f["data"].get("verdict") is None


def _check(seed: Seed, *extra: str):
    r = run_cli(["warmup", "--check", "--json", *extra], env=seed.env())
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, json.loads(r.stdout)


def _rows(doc):
    return {m["name"]: m for w in doc["workspaces"] for m in w["modules"]}


def test_warmup_check_says_what_diagnose_says_about_a_load_failure(tmp_path):
    """``warmup --check`` used to call this module ``ok`` while diagnose said it failed to
    load. Now both read the same finding: the row is ``load-failed`` (not ``ok``, not
    ``incomplete``: a rebuild gives the same file), the finding behind it is diagnose's own,
    with its cause when ``--python`` lets the ELF probes run, and the JSON validates."""
    from importlib import resources

    import jsonschema

    seed = Seed(tmp_path)
    _log(seed, _lines(time.time()))
    diag = _diagnose(seed)
    [d] = [f for f in diag["findings"] if f["id"] == "jit-log-unfinished"]
    assert "cache-incomplete-module" not in {f["id"] for f in diag["findings"]}
    rc, doc = _check(seed, "--python", str(seed.v["python"]))
    assert rc == 1
    rows = _rows(doc)
    assert rows[BYVERSION_MOD]["state"] == "load-failed"
    assert rows[BYVERSION_MOD]["complete"] is False
    assert rows[PLAIN_MOD]["state"] == "ok", "its Finished line came"
    [f] = doc["findings"]
    assert (f["id"], f["subject"], f["title"]) == (d["id"], d["subject"], d["title"])
    assert f["data"]["verdict"] == "load-failed" and f["caused_by"] == "cudart-missing-symbol"
    assert "cudart-missing-symbol" in rows[BYVERSION_MOD]["problem"]
    schema = json.loads(resources.files("fidoctor").joinpath("schema/warmup.schema.json")
                        .read_text())
    jsonschema.validate(doc, schema)
    r = run_cli(["warmup", "--check"], env=seed.env())
    assert r.returncode == 1 and "LOAD-FAILED" in r.stdout and "failed to load" in r.stdout
    assert "--clear-incomplete" not in r.stdout, "moving it aside would not help"


def test_warmup_check_without_python_names_the_load_failure_and_clear_leaves_it(tmp_path):
    """Without ``--python`` no target is asked: the verdict is the same (the log and the
    cache say it), only without the cause; --clear-incomplete leaves the module alone."""
    seed = Seed(tmp_path)
    _log(seed, _lines(time.time()))
    rc, doc = _check(seed)
    assert rc == 1 and _rows(doc)[BYVERSION_MOD]["state"] == "load-failed"
    [f] = doc["findings"]
    assert f["data"]["verdict"] == "load-failed" and not f.get("caused_by")
    r = run_cli(["warmup", "--clear-incomplete", "--json"],
                env=dict(seed.env(), XDG_STATE_HOME=str(tmp_path / "state")))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["txid"] is None
    assert seed.modules[BYVERSION_MOD].exists()


def test_warmup_check_quiet_twin_a_finished_log_is_ok(tmp_path):
    seed = Seed(tmp_path)
    now = time.time()
    _log(seed, _lines(now) + [log_line("old", "finished", BYVERSION_MOD, now - 1799)])
    rc, doc = _check(seed)
    assert rc == 0 and doc["findings"] == []
    assert {m["state"] for m in _rows(doc).values()} == {"ok"}
