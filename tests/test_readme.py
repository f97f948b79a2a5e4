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
