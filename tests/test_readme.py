"""README's promises: the two opening commands, and CI running the test one verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def commands():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    return [next(ln for ln in b.splitlines() if ln and not ln.startswith("#")) for b in blocks[:2]]


def test_readme_opens_with_install_and_test_commands():
    install, tests = commands()
    assert "pip install ." in install and install.endswith("fidoctor diagnose")
    assert "pip install -e '.[test]'" in tests and "pytest" in tests


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands()[1] in ci


def test_findings_table_lists_every_finding_id():
    from fidoctor.ids import finding_ids

    rows = set(re.findall(r"^\| `([a-z0-9-]+)` \|", (ROOT / "README.md").read_text(), re.M))
    assert finding_ids() - rows == set()


def test_a_target_without_flashinfer_is_not_checked_as_the_command_table_says(box, tmp_path):
    """README's command table: diagnose exits 2 when it "could not check the JIT at all
    (never "healthy": … a target without FlashInfer)". A real run on an empty workspace with
    ``--python`` naming an interpreter without FlashInfer (the tests' own). Before: exit 0 and
    "healthy for what was judged" beside `flashinfer-not-installed` ("nothing to diagnose")."""
    import subprocess
    import sys

    text = (ROOT / "README.md").read_text()
    row = next(ln for ln in text.splitlines() if ln.startswith("| `fidoctor diagnose [--json]"))
    assert "a target without FlashInfer" in row and "never \"healthy\"" in row
    env = box.env(HOME=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / "xdg"))  # no workspace
    r = subprocess.run([sys.executable, "-m", "fidoctor", "diagnose", "--python", sys.executable],
                       env=env, capture_output=True, text=True, timeout=120)
    assert "flashinfer-not-installed" in r.stdout, r.stdout + r.stderr
    assert r.returncode == 2 and "not checked" in r.stdout and "healthy" not in r.stdout
