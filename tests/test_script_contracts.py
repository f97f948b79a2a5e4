"""Script-safe contracts (issue 12, item 8): bad ids exit 2 with a did-you-mean, Ctrl-C exits
130 after clean-up, and every JSON fidoctor prints validates against its checked-in schema.

All real: the CLI as a child process, real boxes, a real SIGINT, a real warmup run (a hung
nvcc stand-in stops it in seconds: a real FlashInfer build would take minutes).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import jsonschema
import psutil
import pytest
from conftest import DECODE, FA3, log_line, run_cli
from fix_helpers import fix_env
from warmup_helpers import build_env, hung_toolkit, target_venv

pytestmark = pytest.mark.timeout(240)


def schema(name: str):
    return json.loads(resources.files("fidoctor").joinpath(f"schema/{name}.schema.json")
                      .read_text())


def test_every_schema_is_a_valid_schema():
    names = sorted(p.name for p in resources.files("fidoctor").joinpath("schema").iterdir()
                   if p.name.endswith(".schema.json"))
    for want in ("diagnose", "fix", "undo", "history", "warmup", "snapshot"):
        assert f"{want}.schema.json" in names
    for n in names:
        jsonschema.Draft202012Validator.check_schema(schema(n[: -len(".schema.json")]))


def broken(box):
    ws = box.workspace()
    box.module(ws, DECODE)
    box.module(ws, FA3, so="missing", depfiles=2)
    box.log(ws, [log_line("new", "building", FA3, time.time() - 90)])
    return ws


# ---- unknown ids --------------------------------------------------------------------------

@pytest.mark.parametrize("args, wrong, right", [
    (["--only", "cache-incomplete-modul"], "--only cache-incomplete-modul",
     "cache-incomplete-module"),
    (["--skip", "build-lock-hold"], "--skip build-lock-hold", "build-lock-held"),
    (["--use", "replace-pip-cudar"], "--use replace-pip-cudart"[:-1], "replace-pip-cudart"),
])
def test_unknown_id_is_exit_2_with_did_you_mean(box, tmp_path, args, wrong, right):
    broken(box)
    r = run_cli(["fix", "--python", sys.executable, "--yes", *args],
                env=fix_env(box, tmp_path / "state"))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert wrong in r.stderr and f"did you mean: {right}" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "state" / "fidoctor").exists() or not any(
        (tmp_path / "state" / "fidoctor").rglob("*.journal*")), "nothing may be applied"


def test_known_ids_pass_the_check(box, tmp_path):
    box.module(box.workspace(), DECODE)
    r = run_cli(["fix", "--python", sys.executable, "--only", "cache-incomplete-module",
                 "--skip", "build-lock-held", "--use", "quarantine-module", "--json"],
                env=fix_env(box, tmp_path / "state"))
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    jsonschema.validate(doc, schema("fix"))
    assert doc["status"] == "nothing-to-fix" and doc["txid"] is None


# ---- Ctrl-C -------------------------------------------------------------------------------

def test_ctrl_c_exits_130_after_clean_up(box, tmp_path, procs):
    """SIGINT while a gatherer waits on a wedged nvcc (a stand-in that sleeps forever)."""
    box.module(box.workspace(), DECODE)
    tk = hung_toolkit(tmp_path / "cuda-hung")
    env = box.env(CUDA_HOME=str(tk))
    p = subprocess.Popen([sys.executable, "-m", "fidoctor", "diagnose", "--python", sys.executable],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.popens.append(p)
    procs.remember(p.pid)
    deadline = time.monotonic() + 30
    sleeper = None
    while time.monotonic() < deadline and sleeper is None:  # wait until nvcc is stuck
        for c in psutil.Process(p.pid).children(recursive=True):
            try:
                if str(tk) in " ".join(c.cmdline()) or c.name() == "sleep":
                    sleeper = c
            except psutil.Error:
                continue
        time.sleep(0.1)
    assert sleeper is not None, "the hung nvcc never started"
    below = psutil.Process(p.pid).children(recursive=True)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 130, (out[-500:], err[-1000:])
    assert "fidoctor: interrupted" in err and "Traceback" not in err
    _, alive = psutil.wait_procs(below, timeout=5)
    assert alive == [], f"left behind: {[(x.pid, x.name()) for x in alive]}"


# ---- JSON outputs and their schemas -------------------------------------------------------

def test_fix_then_undo_then_history_json(box, tmp_path):
    broken(box)
    env = fix_env(box, tmp_path / "state")
    base = ["fix", "--python", sys.executable, "--only", "cache-incomplete-module", "--json"]
    dry = run_cli([*base, "--dry-run"], env=env)
    doc = json.loads(dry.stdout)
    jsonschema.validate(doc, schema("fix"))
    assert dry.returncode == 1 and doc["status"] in ("dry-run", "advice-only")
    assert doc["plan"] and doc["target"]["python"] == sys.executable
    assert "plan" in dry.stderr or "fidoctor fix" in dry.stderr  # the narrative, on stderr
    r = run_cli([*base, "--yes", "--no-warmup"], env=env)
    doc = json.loads(r.stdout)
    jsonschema.validate(doc, schema("fix"))
    if doc["status"] == "advice-only":  # a cause (e.g. build-killed) held the fix back
        pytest.skip(f"fix held back on this machine: {doc['unaddressed'] or doc['plan']}")
    assert r.returncode == 0 and doc["status"] == "fixed", doc
    assert doc["txid"] and doc["steps"] and doc["proof"]["ok"] is True
    assert doc["proof"]["target"] == {"python": sys.executable, "pid": None}
    h = run_cli(["history", "--json"], env=env)
    rows = json.loads(h.stdout)
    jsonschema.validate(rows, schema("history"))
    assert rows[-1]["id"] == doc["txid"]
    u = run_cli(["undo", "--json"], env=env)
    undo = json.loads(u.stdout)
    jsonschema.validate(undo, schema("undo"))
    assert u.returncode == 0 and undo["txid"] == doc["txid"] and undo["status"] == "reverted"


def test_fix_proves_itself_on_the_same_pid_target(box, procs, tmp_path):
    """fix --pid: the proof re-diagnoses that process's cache, not fidoctor's own view."""
    broken(box)
    server = procs.start([sys.executable, "-c", "import time; time.sleep(600)"], env=box.env())
    env = dict(os.environ, FLASHINFER_WORKSPACE_BASE=str(tmp_path / "elsewhere"),
               XDG_STATE_HOME=str(tmp_path / "state"))
    r = run_cli(["fix", "--pid", str(server.pid), "--only", "cache-incomplete-module", "--yes",
                 "--no-warmup", "--json"], env=env, timeout=180)
    doc = json.loads(r.stdout)
    jsonschema.validate(doc, schema("fix"))
    assert doc["target"]["pid"] == server.pid and doc["target"]["python"] == sys.executable
    if doc["status"] == "advice-only":
        pytest.skip("fix held back by a cause on this machine")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert doc["proof"]["target"] == {"python": sys.executable, "pid": server.pid}
    assert doc["proof"]["ok"] is True


def test_snapshot_json_validates(box, tmp_path):
    broken(box)
    out = tmp_path / "snap.json"
    r = run_cli(["snapshot", "--python", sys.executable, "-o", str(out)], env=box.env())
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    jsonschema.validate(doc, schema("snapshot"))
    assert {"gpu", "host_compiler", "serving"} <= set(doc["sections"])
    r = run_cli(["snapshot", "--python", sys.executable], env=box.env())
    jsonschema.validate(json.loads(r.stdout), schema("snapshot"))


def test_snapshot_schema_catches_a_broken_gpu_section(box, tmp_path):
    out = tmp_path / "snap.json"
    run_cli(["snapshot", "--python", sys.executable, "-o", str(out)], env=box.env())
    doc = json.loads(out.read_text())
    doc["sections"]["gpu"]["data"]["gpus"] = [{"index": 0, "name": "H200", "compute_cap": "nine",
                                               "sm": None, "source": "nvidia-smi"}]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, schema("snapshot"))


def test_warmup_json_modes_validate(box, tmp_path):
    ws = box.workspace()
    box.module(ws, DECODE)
    box.module(ws, FA3, so="missing")
    env = box.env(XDG_STATE_HOME=str(tmp_path / "state"))
    for args in (["--list"], ["--check"], ["--clear-incomplete"]):
        r = run_cli(["warmup", *args, "--json", "--arch", "9.0a"], env=env)
        assert r.returncode in (0, 1), (args, r.stderr)
        jsonschema.validate(json.loads(r.stdout), schema("warmup"))
    py = target_venv()  # --plan asks the target (one FlashInfer import, nothing built)
    for args in (["--plan", "--python", str(py), "--modules", "single-decode:f16:64"],):
        r = run_cli(["warmup", *args, "--json", "--arch", "9.0a"], env=env, timeout=240)
        assert r.returncode in (0, 1), (args, r.stderr)
        jsonschema.validate(json.loads(r.stdout), schema("warmup"))


def test_warmup_run_json_validates(tmp_path):
    """A real warmup run in the target venv, stopped by a hung nvcc stand-in."""
    py = target_venv()
    tk = hung_toolkit(tmp_path / "cuda-hung")
    env = build_env(py.parent.parent, tmp_path / "base", cuda_home=str(tk),
                    extra={"XDG_STATE_HOME": str(tmp_path / "st")})
    r = subprocess.run([sys.executable, "-m", "fidoctor", "warmup", "--python", str(py),
                        "--modules", "single-decode:f16:64", "--stall-after", "5", "--json"],
                       env=env, capture_output=True, text=True, timeout=200)
    doc = json.loads(r.stdout)
    jsonschema.validate(doc, schema("warmup"))
    assert doc["exit_code"] == r.returncode == 1
    assert doc["modules"][0]["status"] == "stalled"
    # its advice acts on the same interpreter (issue 12, item 4)
    cmds = [c for f in doc["findings"] for x in f["fixes"] for c in x["commands"]
            if c.startswith("fidoctor ")]
    assert cmds and all(f"--python {py}" in c for c in cmds), cmds


def test_schema_files_ship_in_the_package():
    root = Path(resources.files("fidoctor").joinpath("schema"))
    assert (root / "fix.schema.json").is_file()


def test_fix_on_a_box_it_could_not_check_is_exit_2_not_nothing_to_fix(box, tmp_path):
    """``fix`` where diagnose says "not checked" (here: the named interpreter has no FlashInfer
    and there is no cache; the same for a cache too big to scan in time): exit 2, status
    ``not-checked`` with the reason, nothing changed. Before: "Nothing to fix" and exit 0, so
    a script's ``fidoctor fix --yes --python /wrong/venv`` passed as fixed."""
    env = fix_env(box, tmp_path / "state")
    r = run_cli(["fix", "--python", sys.executable, "--yes", "--json"], env=env)
    doc = json.loads(r.stdout)
    jsonschema.validate(doc, schema("fix"))
    assert r.returncode == 2 and doc["status"] == "not-checked" and doc["exit_code"] == 2
    assert any("no FlashInfer" in n for n in doc["notes"]) and doc["txid"] is None
    r = run_cli(["fix", "--python", sys.executable, "--yes"], env=env)
    assert r.returncode == 2 and r.stdout.startswith("Not checked: ") and "Traceback" not in r.stderr
    assert not (tmp_path / "state").exists() or not list((tmp_path / "state").rglob("*.jsonl"))
