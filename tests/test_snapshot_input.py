"""``diagnose --from`` / ``report --from`` of hand-edited snapshots: a clear one-line refusal
or a diagnosis whose JSON is still JSON and still valid against its schema.

Each input is a real snapshot gathered by the real CLI, then edited as a user or a script
would: ``Infinity``/``NaN`` literals (Python's json writes and reads them; jq and every strict
reader refuse them) and wrong-typed context fields.
"""

from __future__ import annotations

import json
import os
from importlib import resources

import jsonschema
import pytest
from conftest import run_cli

pytestmark = pytest.mark.timeout(300)


def _strict(text: str):
    def refuse(c):
        raise ValueError(f"not JSON: {c}")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def snap_text(tmp_path_factory):
    d = tmp_path_factory.mktemp("snap")
    r = run_cli(["snapshot", "-o", str(d / "s.json")],
                env={**os.environ, "FLASHINFER_WORKSPACE_BASE": str(d / "ws")})
    assert r.returncode == 0, r.stderr
    return (d / "s.json").read_text()


def test_infinity_and_nan_in_a_snapshot_never_reach_the_json_output(tmp_path, snap_text):
    """``"pid": Infinity`` in the context became ``"pid": Infinity`` in ``diagnose --json``
    (not JSON; and ``--pid inf`` in printed commands); NaN in a section the same. Now they
    read as null."""
    d = json.loads(snap_text)
    d["context"]["pid"] = None
    d["sections"]["target"]["data"]["version"] = None
    text = json.dumps(d).replace('"pid": null', '"pid": Infinity', 1)
    text = text.replace('"version": null', '"version": NaN', 1)
    assert "Infinity" in text and "NaN" in text
    p = tmp_path / "edited.json"
    p.write_text(text)
    r = run_cli(["diagnose", "--json", "--from", str(p)], timeout=120)
    assert r.returncode in (0, 1, 2) and "Traceback" not in r.stderr, r.stderr
    out = _strict(r.stdout)
    schema = json.loads(resources.files("fidoctor").joinpath("schema/diagnose.schema.json")
                        .read_text())
    jsonschema.validate(out, schema)
    assert "inf" not in json.dumps([f["fixes"] for f in out["findings"]])


@pytest.mark.parametrize("key,value", [("python", ["x"]), ("pid", "123"), ("pid", True),
                                       ("pid", -5), ("python_source", 7), ("env", "PATH=/x")])
def test_wrong_typed_context_is_one_line_exit_2(tmp_path, snap_text, key, value):
    """``"python": ["x"]`` printed ``target: ['x']`` and put it in ``--json`` against its own
    schema; now every context field diagnose copies is type-checked on load."""
    d = json.loads(snap_text)
    d["context"][key] = value
    p = tmp_path / "edited.json"
    p.write_text(json.dumps(d))
    for cmd in (["diagnose", "--json"], ["report", "-o", str(tmp_path / "r.md")]):
        r = run_cli([*cmd, "--from", str(p)], timeout=120)
        assert r.returncode == 2, (cmd, r.stdout[-500:], r.stderr)
        assert f"context.{key}" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_a_kernel_interface_file_is_not_read_as_a_snapshot():
    """``--from /proc/kmsg``: a zero-size "regular file" whose read (non-blocking here) took the
    pending kernel messages from syslog before failing as "not JSON". It is refused unread."""
    if not os.path.exists("/proc/kmsg"):
        pytest.skip("no /proc/kmsg here")
    r = run_cli(["diagnose", "--from", "/proc/kmsg"], timeout=60)
    assert r.returncode == 2 and "kernel's proc interface" in r.stderr, r.stderr
