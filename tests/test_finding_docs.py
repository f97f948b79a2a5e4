"""Every finding id has a page, every page an id; `fidoctor explain`; findings link to pages;
`--list-checks`; shell completion of ids (real bash).

The conformance walk (ruff's rule tests, sos's plugin walk): each probe's id is its file
name, its docstring opens with the id and says What/Why/Fix; each log matcher's id is its
file name; retired ids keep a page and are never registered again.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner
from conftest import FA3, run_cli

from fidoctor.cli import cli
from fidoctor.completion import fix_id_names
from fidoctor.findingdocs import PAGES, doc_ref, documented_ids
from fidoctor.ids import finding_ids, fix_ids
from fidoctor.probes import RETIRED, all_probes

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "findings"
SECTIONS = ["## What", "## Why it matters", "## Evidence fidoctor reads",
            "## Fixes and their safety", "## References"]


def test_every_registered_id_has_a_page_and_every_page_an_id():
    pages = {p.stem for p in DOCS.glob("*.md")}
    assert finding_ids() - pages == set(), "ids without a page"
    assert pages - finding_ids() - set(RETIRED) == set(), "pages without an id (retire it?)"
    # The installed copy is the same folder (a symlink here; real files in wheel and sdist).
    assert set(documented_ids()) == pages and PAGES.resolve() == DOCS.resolve()


def test_retired_ids_keep_a_page_and_are_never_registered_again():
    assert set(RETIRED).isdisjoint(finding_ids())
    for rid in RETIRED:
        assert "retired" in (DOCS / f"{rid}.md").read_text().lower()


@pytest.mark.parametrize("fid", sorted(finding_ids()))
def test_page_has_the_house_shape(fid):
    text = (DOCS / f"{fid}.md").read_text()
    assert text.startswith(f"# {fid}\n\n**Severity:** ")
    at = [text.find(s + "\n") for s in SECTIONS]
    assert all(i > 0 for i in at) and at == sorted(at), f"sections missing or out of order: {at}"
    bodies = re.split(r"^## .*$", text, flags=re.M)[1:]
    assert all(b.strip() for b in bodies), "an empty section"
    # Absolute links only: the pages are read on PyPI-like renderers and in a terminal.
    for href in re.findall(r"\]\(([^)]+)\)", text):
        assert re.match(r"https://", href), href
    assert f"fidoctor explain {fid}" in text


def test_probe_conformance_walk():
    for p in all_probes():
        stem = p.module.rsplit(".", 1)[-1]
        assert p.id == stem.replace("_", "-"), (p.module, p.id)
        assert p.doc.startswith(f"{p.id}: "), p.module
        for word in ("What:", "Why:", "Fix"):
            assert re.search(rf"(^|\s){word}", p.doc), (p.module, word)
        assert p.requires, f"{p.module} declares no REQUIRES"


def test_matcher_conformance_walk():
    from fidoctor.serverlog.matchers import all_matchers

    for m in all_matchers():
        assert m.id in finding_ids()
        stem = m.module.rsplit(".", 1)[-1]
        # The page names the log matcher among the evidence it reads.
        assert f"fidoctor/serverlog/matchers/{stem}.py" in (DOCS / f"{m.id}.md").read_text()


def test_fix_ids_from_file_names_are_the_registered_ones():
    assert set(fix_id_names()) == fix_ids()


def test_explain_prints_every_page():
    runner = CliRunner()
    for fid in sorted(finding_ids()):
        r = runner.invoke(cli, ["explain", fid])
        assert r.exit_code == 0, (fid, r.output)
        assert r.output == (DOCS / f"{fid}.md").read_text().rstrip("\n") + "\n"


def test_explain_as_a_process_and_its_errors():
    r = run_cli(["explain", "cache-incomplete-module"])
    assert r.returncode == 0 and r.stdout.startswith("# cache-incomplete-module")
    r = run_cli(["explain", "cache-incomplete-modul"])
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "did you mean: cache-incomplete-module" in r.stderr
    r = run_cli(["explain", "../../etc/passwd"])
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = run_cli(["explain"])
    assert r.returncode == 2 and "explain --list" in r.stderr
    r = run_cli(["explain", "--list"])
    assert r.returncode == 0
    listed = {ln.split()[0] for ln in r.stdout.splitlines()}
    assert listed == finding_ids() | set(RETIRED)


def test_findings_link_to_their_page_in_json_text_and_report(box, tmp_path):
    ws = box.workspace()
    box.module(ws, FA3, so="truncated")
    snap = tmp_path / "s.json"
    assert run_cli(["snapshot", "-o", str(snap)], env=box.env()).returncode == 0
    r = run_cli(["diagnose", "--from", str(snap), "--json"])
    out = json.loads(r.stdout)
    schema = json.loads((ROOT / "fidoctor/schema/diagnose.schema.json").read_text())
    jsonschema.validate(out, schema)
    f = next(f for f in out["findings"] if f["id"] == "cache-incomplete-module")
    assert f["doc"] == doc_ref(f["id"]) == "docs/findings/cache-incomplete-module.md"
    assert (ROOT / f["doc"]).is_file()
    text = run_cli(["diagnose", "--from", str(snap)]).stdout
    assert "  docs: fidoctor explain cache-incomplete-module" in text
    rep = tmp_path / "r.md"
    assert run_cli(["report", "--from", str(snap), "-o", str(rep)]).returncode == 0
    assert "`fidoctor explain cache-incomplete-module`" in rep.read_text()


def test_list_checks_names_every_probe_with_what_it_reads_and_its_budget():
    r = run_cli(["diagnose", "--list-checks"])
    assert r.returncode == 0
    rows = {ln.split()[0]: ln for ln in r.stdout.splitlines()[1:] if ln and ln[0] != " "}
    for p in all_probes():
        assert p.id in rows
        for section in p.requires:
            assert section in rows[p.id]
    r = run_cli(["diagnose", "--list-checks", "--json"])
    out = json.loads(r.stdout)
    jsonschema.validate(out, json.loads((ROOT / "fidoctor/schema/checks.schema.json").read_text()))
    by_id = {c["id"]: c for c in out["checks"]}
    assert set(by_id) == {p.id for p in all_probes()}
    # elf waits for cache: its chain is both budgets.
    from fidoctor.snapshot.gather import all_gatherers

    g = {x.name: x.budget_s for x in all_gatherers()}
    assert by_id["cudart-missing-symbol"]["budget_s"] >= g["elf"] + g["cache"]
    assert by_id["cache-incomplete-module"]["budget_s"] == g["cache"]


def _bash_complete(words: str, tmp_path: Path) -> list:
    """Real bash: source click's completion script for fidoctor, call it, print COMPREPLY."""
    exe = Path(sys.executable).parent / "fidoctor"
    script = subprocess.run([str(exe)], env={"_FIDOCTOR_COMPLETE": "bash_source",
                                             "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=60).stdout
    assert "_fidoctor_completion" in script
    rc = tmp_path / "rc.sh"
    rc.write_text(script + f'\nPATH="{exe.parent}:$PATH"\nCOMP_WORDS=({words})\n'
                  "COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))\n_fidoctor_completion fidoctor\n"
                  'printf "%s\\n" "${COMPREPLY[@]}"\n')
    r = subprocess.run(["bash", "--norc", "--noprofile", str(rc)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return [ln for ln in r.stdout.splitlines() if ln]


@pytest.mark.skipif(not shutil.which("bash"), reason="needs bash")
def test_bash_completion_completes_ids_and_module_kinds(tmp_path):
    assert _bash_complete("fidoctor fix --only cache-inc", tmp_path) == ["cache-incomplete-module"]
    assert _bash_complete("fidoctor fix --use preload", tmp_path) == ["preload-cudart"]
    assert set(_bash_complete("fidoctor explain build-", tmp_path)) == {
        i for i in finding_ids() if i.startswith("build-")}
    assert set(_bash_complete("fidoctor warmup --modules prefill-", tmp_path)) == {
        "prefill-fa2", "prefill-fa3"}
    assert "explain" in _bash_complete("fidoctor ex", tmp_path)


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_completion_answer_the_env_var(shell):
    """zsh and fish are not installed here: drive click's protocol for them directly."""
    exe = Path(sys.executable).parent / "fidoctor"
    env = {"_FIDOCTOR_COMPLETE": f"{shell}_complete", "PATH": "/usr/bin:/bin",
           "COMP_WORDS": "fidoctor fix --use set-", "COMP_CWORD": "set-" if shell == "fish" else "3"}
    r = subprocess.run([str(exe)], env=env, capture_output=True, text=True, timeout=60)
    assert "set-host-compiler" in r.stdout and "set-max-jobs" in r.stdout
    src = subprocess.run([str(exe)], env={"_FIDOCTOR_COMPLETE": f"{shell}_source",
                                          "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=60).stdout
    assert "_FIDOCTOR_COMPLETE" in src
