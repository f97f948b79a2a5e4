"""Issue 14, classes 4 and 9 (files), and issue 12 item 7: every file fidoctor is handed or
writes goes through fidoctor/safeio.py.

Device nodes are made with mknod inside the test's temp dir (never the system's /dev):
a char device 1,7 is a real /dev/full, 1,5 a real /dev/zero.
"""

from __future__ import annotations

import json
import os
import stat

import pytest
from conftest import DECODE, FA2, run_cli
from report_helpers import API_KEY, USER, leaky_box, survivors

pytestmark = pytest.mark.timeout(120)

S_IFCHR = stat.S_IFCHR


def devnode(path, minor: int) -> None:
    os.mknod(path, 0o666 | S_IFCHR, os.makedev(1, minor))


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")


def target_of_kind(tmp_path, kind: str):
    p = tmp_path / f"out-{kind}"
    if kind == "full":
        devnode(p, 7)
    elif kind == "fifo":
        os.mkfifo(p)
    elif kind == "symlink":
        (tmp_path / "victim.txt").write_text("keep me\n")
        os.symlink(tmp_path / "victim.txt", p)
    elif kind == "dir":
        p.mkdir()
    return p


@needs_root
@pytest.mark.parametrize("command", ["report", "snapshot"])
@pytest.mark.parametrize("kind", ["full", "fifo", "symlink", "dir"])
def test_output_never_replaces_a_non_regular_file(box, tmp_path, command, kind):
    """The defect: ``report -o /dev/full`` replaced the device node with a regular file."""
    box.module(box.workspace(), DECODE)
    p = target_of_kind(tmp_path, kind)
    mode0 = os.lstat(p).st_mode
    r = run_cli([command, "-o", str(p)], env=box.env(), timeout=60)
    assert r.returncode == 2, r.stderr
    assert "not a regular file" in r.stderr and "Traceback" not in r.stderr
    assert os.lstat(p).st_mode == mode0  # still the same kind of thing
    if kind == "symlink":
        assert (tmp_path / "victim.txt").read_text() == "keep me\n"
    assert not [n for n in os.listdir(tmp_path) if ".fidoctor-" in n]  # no temp left


def test_snapshot_to_a_missing_dir_is_one_line(box, tmp_path):
    r = run_cli(["snapshot", "-o", str(tmp_path / "nope" / "s.json")], env=box.env())
    assert r.returncode == 2 and "no such directory" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_snapshot_to_a_full_disk_is_one_line_and_leaves_no_temp(box, tmp_path):
    import subprocess

    box.module(box.workspace(), DECODE)
    mnt = tmp_path / "full"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mnt)], check=True)
    try:
        with open(mnt / "filler", "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 1024)
            except OSError:
                pass
        r = run_cli(["snapshot", "-o", str(mnt / "s.json")], env=box.env())
        assert r.returncode == 2, r.stderr
        assert "No space left" in r.stderr and "Traceback" not in r.stderr
        assert sorted(os.listdir(mnt)) == ["filler"]
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@needs_root
@pytest.mark.parametrize("kind", ["fifo", "zero", "huge", "deep", "dir"])
def test_from_never_hangs_or_eats_memory(tmp_path, kind):
    p = tmp_path / f"in-{kind}"
    if kind == "fifo":
        os.mkfifo(p)  # no writer: a plain open() blocks forever
    elif kind == "zero":
        devnode(p, 5)
    elif kind == "huge":
        with open(p, "wb") as f:
            f.truncate(1 << 30)  # 1 GiB, sparse
    elif kind == "deep":
        p.write_bytes(b"[" * 100_000 + b"]" * 100_000)
    elif kind == "dir":
        p.mkdir()
    for cmd in (["diagnose", "--from", str(p)], ["report", "--from", str(p)]):
        r = run_cli(cmd, timeout=30)
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr and "internal error" not in r.stderr
        if kind != "dir":  # click's own usage error says "is a directory"
            assert len(r.stderr.strip().splitlines()) <= 2, r.stderr


@pytest.mark.parametrize("doc,needle", [
    ({"schema_version": 0}, "schema_version 0"),
    ({"schema_version": -5}, "schema_version -5"),
    ({"schema_version": True}, "schema_version True"),
    ({"schema_version": "1"}, "schema_version '1'"),
    ({"schema_version": 1, "context": [], "sections": {}, "taken_at": 0}, "must be objects"),
    ({"schema_version": 1, "context": {}, "sections": {"x": 5}, "taken_at": 0}, "section 'x'"),
    ({"schema_version": 1, "context": {}, "sections": {"x": {"status": "ok", "data": []}},
      "taken_at": 0}, "section 'x'"),
    ({"schema_version": 1, "context": {}, "sections": {}, "taken_at": "now"}, "taken_at"),
])
def test_wrong_types_are_one_line_errors(tmp_path, doc, needle):
    p = tmp_path / "s.json"
    base = {"context": {}, "sections": {}, "taken_at": 0}
    p.write_text(json.dumps(dict(base, **doc)))
    r = run_cli(["diagnose", "--from", str(p)])
    assert r.returncode == 2 and needle in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_snapshot_is_redacted_by_default_and_0600(box, tmp_path):
    """Issue 12 item 7: snapshot wrote VLLM_API_KEY in clear and world-readable."""
    env = leaky_box(box, tmp_path)
    out = tmp_path / "s.json"
    r = run_cli(["snapshot", "-o", str(out)], env=env)
    assert r.returncode == 0, r.stderr
    assert "redacted" in r.stderr
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert survivors(out.read_bytes()) == []
    # stdout too
    r = run_cli(["snapshot"], env=env)
    assert r.returncode == 0 and survivors(r.stdout.encode()) == []
    # it still replays to findings (paths redacted the same way everywhere)
    rep = run_cli(["diagnose", "--json", "--from", str(out)],
                  env=dict(os.environ, FLASHINFER_WORKSPACE_BASE=str(tmp_path / "elsewhere")))
    assert rep.returncode == 1
    ids = {f["id"] for f in json.loads(rep.stdout)["findings"]}
    assert "cache-incomplete-module" in ids


def test_snapshot_no_redact_keeps_values(box, tmp_path):
    env = leaky_box(box, tmp_path)
    out = tmp_path / "s.json"
    r = run_cli(["snapshot", "--no-redact", "-o", str(out)], env=env)
    assert r.returncode == 0 and "NOT redacted" in r.stderr
    raw = out.read_bytes()
    assert USER.encode() in raw and API_KEY.encode() in raw
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600


def test_report_files_are_0600(box, tmp_path):
    box.module(box.workspace(), FA2, so="text")
    out = tmp_path / "r.md"
    r = run_cli(["report", "-o", str(out), "--attach-snapshot"], env=box.env())
    assert r.returncode == 0, r.stderr
    for p in (out, tmp_path / "r.snapshot.json"):
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600


def test_env_file_that_is_a_fifo_is_refused_not_read(tmp_path):
    """fix reads the old env.sh before rewriting it: a FIFO there used to block forever."""
    from fidoctor.errors import FidoctorError
    from fidoctor.fixes._envfile import env_step

    os.mkfifo(tmp_path / "env.sh")
    with pytest.raises(FidoctorError, match="not a regular file"):
        env_step(str(tmp_path), {"LD_PRELOAD": "/x/libcudart.so.12"})


def test_every_section_field_of_the_wrong_type_is_survived(box, tmp_path):
    """Wrong types in a --from snapshot used to end in AttributeError/TypeError ("internal
    error"). Every top-level field of every section (and of the context) of a real
    snapshot is replaced by values of the wrong type; diagnose (text and JSON) and report
    must still answer, or refuse with a one-line FidoctorError, never raise anything else."""
    import copy

    from fidoctor.diagnosis import diagnose
    from fidoctor.errors import FidoctorError
    from fidoctor.render.style import Styler
    from fidoctor.render.text import render
    from fidoctor.report import build
    from fidoctor.snapshot import Snapshot

    box.module(box.workspace(), FA2, so="text")
    out = tmp_path / "s.json"
    assert run_cli(["snapshot", "--no-redact", "-o", str(out)], env=box.env()).returncode == 0
    base = json.loads(out.read_text())
    spots = [("context", k) for k in base["context"]]
    spots += [(sec, k) for sec, v in base["sections"].items()
              for k in (v["data"] if isinstance(v["data"], dict) else {})]
    crashes = []
    for where, key in spots:
        for bad in (5, [1, "a"], {"a": [1]}):
            d = copy.deepcopy(base)
            target = d["context"] if where == "context" else d["sections"][where]["data"]
            target[key] = bad
            try:
                snap = Snapshot.from_dict(d)
                diag = diagnose(snap)
                render(diag, Styler(False))
                json.dumps(diag.to_json())
                if bad == 5:  # the report (redaction + replay) once per spot: CI time
                    build(snap)
            except FidoctorError:
                pass
            except Exception as e:  # noqa: BLE001 - the point of the test
                crashes.append(f"{where}.{key}={bad!r}: {type(e).__name__}: {e}")
    assert crashes == [], crashes[:10]
