"""target-lacks-flashinfer, and the verdict contracts: never "healthy" for what was not checked.

The scene of issue 12: fidoctor installed in its own venv (this test session's
interpreter: no torch, no FlashInfer) runs without --python/--pid, while the
serving venv (the cached target venv with CPU torch + flashinfer-python) lives
elsewhere under $HOME and the FlashInfer cache holds modules.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from conftest import DECODE, run_cli
from target_helpers import live, plain_venv, site_packages
from warmup_helpers import target_venv

from fidoctor.diagnosis import diagnose
from fidoctor.snapshot import Section, Snapshot

pytestmark = pytest.mark.timeout(240)


def schema():
    from importlib import resources
    return json.loads(resources.files("fidoctor").joinpath("schema/diagnose.schema.json")
                      .read_text())


@pytest.fixture(scope="module")
def serving_venv() -> Path:
    return target_venv().parent.parent


def readme_env(box, home: Path, **extra):
    """fidoctor run as installed by the README: its own venv, nothing activated."""
    env = box.env(HOME=str(home), **extra)
    for k in ("VIRTUAL_ENV", "CONDA_PREFIX"):
        env.pop(k, None)
    return env


def test_own_venv_with_the_server_elsewhere_is_never_healthy(box, tmp_path, serving_venv):
    box.module(box.workspace(), DECODE)  # a healthy cache: only the wrong target is wrong
    home = tmp_path / "home"
    home.mkdir()
    (home / "serving").symlink_to(serving_venv)  # the serving venv, under $HOME
    r = run_cli(["diagnose", "--json"], env=readme_env(box, home))
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    jsonschema.validate(doc, schema())
    f = next(x for x in doc["findings"] if x["id"] == "target-lacks-flashinfer")
    assert f["severity"] == "warning" and f["subject"] == sys.executable
    py = str(home / "serving" / "bin" / "python")
    assert {"python": py, "flashinfer": "0.7.2.post1"} in f["data"]["venvs"]
    assert f"fidoctor diagnose --python {py}" in f["fixes"][0]["commands"]
    assert any("1 module(s)" in e for e in f["evidence"])
    assert "flashinfer-not-installed" not in {x["id"] for x in doc["findings"]}
    # Warnings ignored: still not healthy, because nothing about the server was checked.
    r = run_cli(["diagnose", "--fail-on", "error"], env=readme_env(box, home))
    assert r.returncode == 2
    assert "not checked: the target interpreter has no FlashInfer" in r.stdout


def test_the_printed_command_finds_flashinfer(box, tmp_path, serving_venv):
    """Following the advice: the same box, now with --python, is diagnosed for real."""
    box.module(box.workspace(), DECODE)
    py = str(serving_venv / "bin" / "python")
    r = run_cli(["diagnose", "--json", "--python", py], env=readme_env(box, tmp_path))
    doc = json.loads(r.stdout)
    assert r.returncode == 0, doc["findings"]
    assert doc["target"]["flashinfer"] == "0.7.2.post1"
    assert "target-lacks-flashinfer" not in {x["id"] for x in doc["findings"]}


def test_named_target_stays_quiet(box, tmp_path):
    """--python names the target: the user chose it; no second-guessing."""
    box.module(box.workspace(), DECODE)
    r = run_cli(["diagnose", "--json", "--python", sys.executable], env=readme_env(box, tmp_path))
    doc = json.loads(r.stdout)
    assert "target-lacks-flashinfer" not in {x["id"] for x in doc["findings"]}
    assert doc["summary"]["exit_code"] == 0


def _snap(sections, context=None):
    ctx = {"python": sys.executable, "python_source": "fidoctor's own interpreter", "env": {}}
    ctx.update(context or {})
    return Snapshot(context=ctx, sections=sections)


def _target_without_fi():
    return Section("ok", {"usable": True, "python": sys.executable, "version": "3.11",
                          "packages": {}, "modules": {}})


def test_nothing_anywhere_is_quiet_and_flashinfer_not_installed_speaks():
    """A snapshot of a machine with no FlashInfer anywhere (plain data, no gathering)."""
    snap = _snap({"target": _target_without_fi(),
                  "serving": Section("ok", {"explicit": False, "servers": [], "venvs": []}),
                  "cache": Section("ok", {"root": "/nowhere", "workspaces": []})})
    found = {f.id for f in diagnose(snap).findings}
    assert "target-lacks-flashinfer" not in found and "flashinfer-not-installed" in found


def test_a_live_server_is_listed_with_its_pid_command():
    server = {"pid": 4242, "cmdline": "python -m sglang.launch_server", "python": "/srv/v/bin/python",
              "reasons": ["runs a server (sglang.launch_server)"], "how": "venv", "flashinfer_root": ""}
    snap = _snap({"target": _target_without_fi(),
                  "serving": Section("ok", {"explicit": False, "servers": [server], "venvs": []}),
                  "cache": Section("ok", {"root": "/nowhere", "workspaces": []})})
    f = next(f for f in diagnose(snap).findings if f.id == "target-lacks-flashinfer")
    assert f.fixes[0].commands == ["fidoctor diagnose --pid 4242"]
    assert "runs /srv/v/bin/python" in f.evidence[1]


# ---- never "healthy" for what was not checked ---------------------------------------------

def test_a_snapshot_without_sections_exits_2(tmp_path):
    p = tmp_path / "empty.json"
    p.write_text(json.dumps({"schema_version": 1, "context": {"python": "/x"}, "sections": {},
                             "taken_at": 0}))
    r = run_cli(["diagnose", "--from", str(p)])
    assert r.returncode == 2 and "not checked: the snapshot holds no sections" in r.stdout
    r = run_cli(["diagnose", "--from", str(p), "--json"])
    doc = json.loads(r.stdout)
    jsonschema.validate(doc, schema())
    assert doc["summary"]["exit_code"] == 2 and doc["summary"]["unchecked"]


def test_every_jit_probe_inconclusive_exits_2(box, tmp_path):
    """A real snapshot whose JIT sections then read as timed out (as a dead NFS cache does:
    the gatherers give up) — replayed with --from."""
    box.module(box.workspace(), DECODE)
    out = tmp_path / "snap.json"
    r = run_cli(["snapshot", "--python", sys.executable, "-o", str(out)], env=box.env())
    assert r.returncode == 0, r.stderr
    raw = json.loads(out.read_text())
    for name in ("cache", "jitlog", "processes"):
        raw["sections"][name] = {"status": "timeout", "data": {}, "error": "gave up after 5 s",
                                 "elapsed_s": 5.0}
    out.write_text(json.dumps(raw))
    r = run_cli(["diagnose", "--from", str(out)])
    assert r.returncode == 2, r.stdout
    assert "not checked: every JIT probe was inconclusive (missing facts: " in r.stdout
    assert "cache (timeout: gave up after 5 s)" in r.stdout
    assert "healthy" not in r.stdout


def warning_only_box(box):
    """A healthy module and a symlink loop in cached_ops: cache-unreadable, a warning only."""
    ws = box.workspace()
    box.module(ws, DECODE)
    os.symlink("loop", ws / "cached_ops" / "loop")
    return ws


def test_fail_on_error_lets_warnings_pass(box, tmp_path):
    warning_only_box(box)
    args = ["diagnose", "--python", sys.executable]
    r = run_cli(args, env=box.env())
    assert r.returncode == 1 and "WARNING  cache-unreadable" in r.stdout, r.stdout
    r = run_cli([*args, "--fail-on", "error"], env=box.env())
    assert r.returncode == 0, r.stdout
    assert "healthy (1 warning(s) ignored by --fail-on error)" in r.stdout
    r = run_cli([*args, "--fail-on", "fatal"], env=box.env())
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_quiet_and_verbose(box):
    warning_only_box(box)
    args = ["diagnose", "--python", sys.executable]
    q = run_cli([*args, "-q"], env=box.env())
    assert q.returncode == 1
    assert q.stdout.strip().splitlines() == [
        "summary: 0 error(s), 1 warning(s), 0 info — problems found"]
    v = run_cli([*args, "-v"], env=box.env())
    assert v.returncode == 1
    gathered = [ln for ln in v.stdout.splitlines() if ln.startswith("gather: ")]
    assert any(ln.split()[1] == "cache" and ln.split()[2] == "ok" for ln in gathered)
    assert len(gathered) >= 10
    both = run_cli([*args, "-q", "-v"], env=box.env())
    assert both.returncode == 2 and "contradict" in both.stderr


def test_env_has_no_stray_target(monkeypatch):
    # The helper above must really strip an activated venv, or the scene is not the README's.
    assert "VIRTUAL_ENV" not in readme_env(type("B", (), {"env": lambda self, **kw: dict(
        os.environ, VIRTUAL_ENV="/x", **kw)})(), Path("/tmp"))


def _torch_like(procs, venv: Path, tmp_path: Path):
    """A live Python from ``venv`` that maps a library named like libtorch (gcc-built stand-in:
    the real torch lives only in the cached target venv, which has FlashInfer)."""
    lib = tmp_path / "libtorch_stub.so"
    if not lib.exists():
        (tmp_path / "t.c").write_text("int torch_stub(void) { return 0; }\n")
        subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(lib), str(tmp_path / "t.c")],
                       check=True)
    return live(procs, [str(venv / "bin" / "python")], f"import ctypes; ctypes.CDLL({str(lib)!r})")


def test_a_torch_process_without_flashinfer_near_it_is_no_candidate(procs, tmp_path):
    from fidoctor.snapshot.gather.serving import find_servers

    bare = plain_venv(tmp_path, "bare")
    with_fi = plain_venv(tmp_path, "with-fi")
    (site_packages(with_fi) / "flashinfer_python-0.7.2.post1.dist-info").mkdir()  # stand-in
    a = _torch_like(procs, bare, tmp_path)
    b = _torch_like(procs, with_fi, tmp_path)
    found = {s["pid"]: s for s in find_servers()}
    assert a.pid not in found
    assert found[b.pid]["flashinfer"] == "0.7.2.post1"
    assert found[b.pid]["python"] == str(with_fi / "bin" / "python")
