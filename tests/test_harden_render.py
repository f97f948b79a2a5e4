"""Issue 14, class 5: printed commands are safe to paste, rendered strings drive no terminal.

Real module dirs whose names hold a newline followed by a shell command, and terminal
escape sequences (retitle, recolour, hide). Before: the ``# by hand:`` line of diagnose's
text and of the report's ``sh`` block ran the rest of the name when pasted.
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
from conftest import DECODE, run_cli

from fidoctor.model import Finding, Fix
from fidoctor.textsafe import NOT_SHOWN, shown

pytestmark = pytest.mark.timeout(120)

NEWLINE_NAME = "norm_evil\ntouch PWNED"
ESC_NAME = "norm_esc\x1b]0;owned\x07\x1b[8m"


def hostile_box(box):
    ws = box.workspace()
    box.module(ws, DECODE)
    box.module(ws, NEWLINE_NAME, so="text")
    box.module(ws, ESC_NAME, so="text")
    return ws


def sh_blocks(md: str):
    return [b.splitlines() for b in re.findall(r"```sh\n(.*?)```", md, re.S)]


def test_text_output_has_no_raw_controls_and_no_runnable_name(box, tmp_path):
    hostile_box(box)
    r = run_cli(["diagnose"], env=box.env())
    assert r.returncode == 1, r.stderr
    out = r.stdout
    assert "\x1b" not in out and "\x07" not in out
    assert not any(line.startswith("touch PWNED") for line in out.splitlines())
    assert "norm_evil\\ntouch PWNED" in out  # the name is shown, escaped
    assert "by hand: not shown" in out


def test_report_sh_blocks_are_safe_to_paste(box, tmp_path):
    hostile_box(box)
    r = run_cli(["report"], env=box.env())
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout
    paste = tmp_path / "paste"
    paste.mkdir()
    for block in sh_blocks(r.stdout):
        # Everything a user would paste except fidoctor's own commands (not run here).
        lines = [ln for ln in block if not ln.startswith("fidoctor ")]
        subprocess.run(["sh"], input="\n".join(lines) + "\n", text=True, cwd=paste,
                       capture_output=True, timeout=30)
    assert os.listdir(paste) == [], "pasting the report's commands ran part of a name"


def test_json_carries_the_data_raw_and_the_commands_safe(box):
    hostile_box(box)
    r = run_cli(["diagnose", "--json"], env=box.env())
    doc = json.loads(r.stdout)
    evil = [f for f in doc["findings"] if "norm_evil" in f["subject"]]
    assert evil
    assert evil[0]["data"]["module_dir"].endswith(NEWLINE_NAME)  # fix still finds it
    for f in evil:
        for fx in f["fixes"]:
            assert all("\n" not in c for c in fx["commands"])


def test_fix_still_quarantines_the_hostile_module_and_undo_restores_it(box, tmp_path):
    ws = hostile_box(box)
    env = box.env(XDG_STATE_HOME=str(tmp_path / "state"))
    r = run_cli(["fix", "--yes", "--no-warmup", "--only", "cache-incomplete-module"], env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "\x1b" not in r.stdout
    assert not (ws / "cached_ops" / NEWLINE_NAME).exists()
    u = run_cli(["undo"], env=env)
    assert u.returncode == 0 and "\x1b" not in u.stdout
    assert (ws / "cached_ops" / NEWLINE_NAME / f"{NEWLINE_NAME}.so").exists()


def test_model_escapes_and_withholds():
    f = Finding(id="x", severity="error", title="t\x1b[2J", evidence=["a\nb", "\u202eevil"],
                fixes=[Fix("d\x9b", ["# by hand: rm -rf 'a\nb'", "fidoctor fix --only x"])])
    assert f.title == "t\\x1b[2J" and f.evidence == ["a\\nb", "\\u202eevil"]
    assert f.fixes[0].commands == [NOT_SHOWN, "fidoctor fix --only x"]
    assert f.fixes[0].description == "d\\x9b"
    assert shown(shown("a\tb")) == "a\\tb"


def _no_raw_controls(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text, text
    assert not any(line.startswith("touch PWNED") for line in text.splitlines()), text


def test_warmup_check_and_clear_incomplete_show_hostile_names_escaped(box, tmp_path):
    """``warmup --check`` and ``--clear-incomplete`` print module names: before, raw (a
    newline in a name started a line of its own, escapes drove the terminal)."""
    ws = hostile_box(box)
    env = box.env(XDG_STATE_HOME=str(tmp_path / "state"))
    r = run_cli(["warmup", "--check"], env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    _no_raw_controls(r.stdout + r.stderr)
    assert "norm_evil\\ntouch PWNED" in r.stdout
    c = run_cli(["warmup", "--clear-incomplete"], env=env)
    assert c.returncode == 0, c.stdout + c.stderr
    _no_raw_controls(c.stdout + c.stderr)
    assert not (ws / "cached_ops" / NEWLINE_NAME).exists()  # still found and moved aside


@pytest.mark.slow
def test_cache_verify_and_export_show_hostile_names_escaped(box, tmp_path):
    """``cache verify`` (its text) and ``cache export`` (its refusal, an error message)
    print module names: before, raw. The target is the real FlashInfer venv."""
    from warmup_helpers import target_venv

    hostile_box(box)
    env = box.env()
    py = str(target_venv())
    r = run_cli(["cache", "verify", "--python", py, "--arch", "9.0a"], env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    _no_raw_controls(r.stdout + r.stderr)
    assert "norm_evil\\ntouch PWNED" in r.stdout
    e = run_cli(["cache", "export", "--python", py, "--arch", "9.0a", "-o",
                 str(tmp_path / "k.tar")], env=env)
    _no_raw_controls(e.stdout + e.stderr)
    assert "norm_evil\\ntouch PWNED" in e.stdout + e.stderr


def _poisoned(o, tail):
    if isinstance(o, dict):
        return {k: v if k in ("schema_version", "status") else _poisoned(v, tail)
                for k, v in o.items()}
    if isinstance(o, list):
        return [_poisoned(x, tail) for x in o]
    return o + tail if isinstance(o, str) else o


def test_a_snapshot_whose_every_string_is_hostile_renders_nothing_raw(box, tmp_path):
    """Someone else's snapshot (``report --from``, ``diagnose --from``, ``fleet``) is input:
    a real gathered snapshot with an escape sequence and a forged line appended to every
    string. Before, ``report --from`` printed the target's versions raw in its verdict."""
    from conftest import snapshot_of

    ws = box.workspace()
    box.module(ws, DECODE)
    box.module(ws, NEWLINE_NAME, so="text")
    doc = _poisoned(snapshot_of(box).to_dict(), "\x1b]0;owned\x07\ntouch PWNED")
    for sec in doc["sections"].values():
        sec["error"] = ""
    src = tmp_path / "their.snapshot.json"
    src.write_text(json.dumps(doc))
    for args in (["report", "--from", str(src)], ["diagnose", "--from", str(src)],
                 ["diagnose", "-v", "--from", str(src)], ["fleet", str(src)],
                 ["fleet", "--markdown", str(src)]):
        r = run_cli(args, env=box.env())
        assert r.returncode in (0, 1), (args, r.stdout + r.stderr)
        for out in (r.stdout, r.stderr):
            assert "\x1b" not in out and "\x07" not in out, (args, out)
            assert not any(ln.startswith("touch PWNED") for ln in out.splitlines()), (args, out)

