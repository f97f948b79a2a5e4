"""Redaction's fast paths never let a value through (the 10,000-module speed-up).

The redactor skips work on most strings: a cheap "can this string hold an address / a DNS
name / a ``Bearer`` header" test runs before each slow pattern, a dict or list with
nothing to hide is shared instead of copied, and snapshot files are written by a faster
JSON writer. Each case below is one the shortcut could get wrong: an IPv6 address without
``::``, a mapped or zoned one, a dotted quad at either end of a string, upper-case names,
a header whose case only Unicode folding sees (``baſic``), a value in a dict *key*, in the
middle or at the end of a megabyte-long string, in a tuple, after unchanged items, with
characters JSON escapes (``"``, ``\\``, newline, non-ASCII, non-BMP), and in a path that
is not UTF-8. The end-to-end cases run the real CLI on a real box and read the real files
it wrote, in every form the value could take there (raw, JSON-escaped, ASCII-escaped).
"""

from __future__ import annotations

import json
import os

import pytest
from conftest import DECODE, FA2, run_cli

from fidoctor.report.redact import Redactor
from fidoctor.snapshot import Snapshot, dumps

pytestmark = pytest.mark.timeout(180)

HIDDEN = [
    ("up on 2001:db8:0:0:0:0:2:1 now", "2001:db8:0:0:0:0:2:1"),  # eight groups, no "::"
    ("addr=2001:db8::2:1", "2001:db8::2:1"),
    ("link fe80::1ff:fe23:4567:890a%eth0 up", "fe80::1ff:fe23:4567:890a"),
    ("::ffff:10.1.2.3", "10.1.2.3"),
    ("10.1.2.3", "10.1.2.3"),
    ("10.1.2.3:8000 refused", "10.1.2.3"),
    ("connect via 10.1.2.3", "10.1.2.3"),
    ("NODE7.CORP.EXAMPLE.COM answered", "NODE7.CORP.EXAMPLE.COM"),
    ("at gpu3.rack7.cluster", "gpu3.rack7.cluster"),
    ("BEARER abcdefgh12345", "abcdefgh12345"),
    ("héllo Bearer abcdefgh12345", "abcdefgh12345"),  # not ASCII: the regex decides alone
    ("baſic abcdefgh12345", "abcdefgh12345"),  # re's case folding: ſ is an s
    ("Authorization:\tToken abcdefgh12345", "abcdefgh12345"),
]
KEPT = ["2025-01-01 00:00:09,000 - INFO - flashinfer.jit: Loading JIT ops: x",
        "/c/flashinfer/0.7.2.post1/90a/cached_ops/x/x.so", "ninja 1.11.1.4", "12:34:56:78",
        "a.b.c", "v1.2.3.4"]


@pytest.mark.parametrize("text,secret", HIDDEN)
def test_a_shortcut_never_skips_a_value(text, secret):
    assert secret not in Redactor().text(text)
    # The same string as a snapshot value, a key, and inside a list, in one tree.
    doc = {"sections": {"s": {"data": {"v": text, text: 1, "l": ["ok", text], "t": ("ok", text)}}}}
    out = json.dumps(Redactor().learn(doc).tree(doc), ensure_ascii=False)
    assert secret not in out, out


@pytest.mark.parametrize("text", KEPT)
def test_a_shortcut_keeps_what_is_no_value(text):
    assert Redactor().text(text) == text


def test_shared_subtrees_are_only_the_unchanged_ones():
    """Copy-on-write: the input is never changed, a change deep down or late in a list is
    still made, and argv's short secret in a tuple is hidden."""
    home = "/home/qzjdoe7"
    doc = {
        "clean": {"a": [1, 2, {"b": "nothing here"}], "c": "plain"},
        "late": ["x", "y", "z", f"{home}/m.so"],
        "deep": {"k1": 1, "k2": {"k3": [{"k4": ("p", f"{home}/.cache")}]}},
        f"{home}/key.so": {"only": "the key"},
        "argv": ("python", "-m", "sglang", "--api-key", "ab1", "--port", "1"),
    }
    before = json.dumps(doc, sort_keys=True)
    r = Redactor().learn_local({"HOME": home, "USER": "qzjdoe7"})
    r.learn(doc)
    out = r.tree(doc)
    assert json.dumps(doc, sort_keys=True) == before  # the input is untouched
    text = json.dumps(out)
    assert "qzjdoe7" not in text and '"ab1"' not in text, text
    assert out["clean"] == doc["clean"] and out["late"][:3] == ["x", "y", "z"]
    assert out["late"][3] == "<home-1>/m.so"
    assert out["deep"]["k2"]["k3"][0]["k4"] == ["p", "<home-1>/.cache"]
    assert out["<home-1>/key.so"] == {"only": "the key"}
    assert out["argv"][4].startswith("<secret-") and out["argv"][:4] == [
        "python", "-m", "sglang", "--api-key"]


def test_the_snapshot_writer_writes_the_same_json_value(tmp_path):
    """``dumps`` is a layout of json.dumps(indent=1, sort_keys=True)'s value: same object
    back for every reader (non-string keys, NaN, escapes, surrogates, tuples, big lists)."""
    doc = {"schema_version": 1, "z": {"1": {2: 3, 1: True}, "n": [float("inf"), -0.0, None]},
           "e": ("\udcff\"\\\n😀é", []), "sections": {"cache": {"data": {"workspaces": [
               {"modules": [{"i": i, "p": "/x" * 3} for i in range(40)]}]}}},
           "deep": [[[[[[[[{"q": list(range(40))}]]]]]]]]}
    new = dumps(doc)
    old = json.dumps(doc, indent=1, sort_keys=True) + "\n"
    assert json.dumps(json.loads(new)) == json.dumps(json.loads(old))
    assert new.endswith("}\n") and "\n" in new.strip()
    # A snapshot's module record is one greppable line.
    assert any(line.strip().startswith('{"i": 7,') for line in new.splitlines())


SECRET = 'Zq9"pa\\ss\nwörd-😀-planted'  # every kind of character JSON escapes


def forms(value: str):
    """Every way ``value`` can stand in a file fidoctor wrote."""
    return {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}


def leaked(raw: bytes, *values: str):
    text = raw.decode("utf-8", "surrogateescape")
    return [f for v in values for f in forms(v) if f in text]


def test_snapshot_and_report_hide_escaped_long_keyed_and_non_utf8_values(box, tmp_path):
    """A real box under a planted home: a secret with escaped characters in the server's
    env, a module dir whose name is not UTF-8, a JIT log line with a token and an internal
    host, a 120 kB env value with a Bearer header at its end; then a hand-made snapshot
    with secrets in keys. Nothing
    leaks from ``snapshot -o``, ``snapshot`` (stdout), ``report --attach-snapshot`` or
    ``report --from``, and the redacted snapshot replays."""
    user = "qzjdoe8"
    home = tmp_path / "home" / user
    home.mkdir(parents=True)
    box.base = home
    box.root = home / ".cache" / "flashinfer"
    ws = box.workspace()
    box.module(ws, DECODE)
    box.module(ws, FA2, so="missing", depfiles=1)
    odd = os.fsencode(ws / "cached_ops") + b"/mod_\xff\xfe_" + user.encode()
    os.mkdir(odd)
    (ws / "cached_ops" / os.fsdecode(b"mod_\xff\xfe_" + user.encode()) / "build.ninja").write_text(
        "ninja_required_version = 1.3\n")
    token = "hf_PlantedLongLineToken0123456789"
    host = "db9.corp.example.com"
    box.log(ws, ["2026-11-29 10:00:00,000 - INFO - flashinfer.jit: Building JIT module "
                 f"norm_tok; token={token} at {host}\n"])
    bearer = "Bearer LongStringBearer0123456789"
    env = box.env(HOME=str(home), USER=user, LOGNAME=user, VLLM_API_KEY=SECRET,
                  FLASHINFER_NOTE="y" * 120_000 + f" {bearer} via {host}")  # near the 128 KiB cap
    out = tmp_path / "out"
    out.mkdir()

    plain = run_cli(["snapshot", "--no-redact"], env=env)
    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout)["context"]["env"]["VLLM_API_KEY"] == SECRET  # gathered
    assert "mod_" in plain.stdout and token in plain.stdout and bearer in plain.stdout

    s = run_cli(["snapshot", "-o", str(out / "s.json")], env=env)
    assert s.returncode == 0, s.stderr
    stdout = run_cli(["snapshot"], env=env)
    assert stdout.returncode == 0, stdout.stderr
    r = run_cli(["report", "-o", str(out / "r.md"), "--attach-snapshot", "--no-collect-env"],
                env=env)
    assert r.returncode == 0, r.stderr
    private = [SECRET, user, str(home), token, host, bearer.split()[1]]
    for name, raw in [("s.json", (out / "s.json").read_bytes()),
                      ("stdout", stdout.stdout.encode("utf-8", "surrogateescape")),
                      ("r.md", (out / "r.md").read_bytes()),
                      ("r.snapshot.json", (out / "r.snapshot.json").read_bytes())]:
        assert leaked(raw, *private) == [], name
    red = json.loads((out / "s.json").read_bytes())
    assert red["context"]["env"]["VLLM_API_KEY"].startswith("<secret-")
    assert any("mod_" in m["name"] for w in red["sections"]["cache"]["data"]["workspaces"]
               for m in w["modules"])

    # A snapshot with private values in keys, and one value spread over a long string.
    snap = json.loads(plain.stdout)
    snap["sections"]["host"]["data"][f"{home}/{token}"] = {SECRET: [f"{host}"]}
    snap["context"]["env"]["FLASHINFER_NOTE"] = "y" * (1 << 20) + f" via {host}"
    src = tmp_path / "hand.json"
    src.write_text(json.dumps(snap))
    r2 = run_cli(["report", "--from", str(src), "-o", str(out / "f.md"), "--attach-snapshot"],
                 env=env)
    assert r2.returncode == 0, r2.stderr
    assert "does not replay" not in r2.stderr, r2.stderr
    for f in ("f.md", "f.snapshot.json"):
        assert leaked((out / f).read_bytes(), *private) == [], f
    replay = run_cli(["diagnose", "--from", str(out / "f.snapshot.json"), "--json"], env=env)
    assert replay.returncode in (0, 1), replay.stderr
    assert Snapshot.from_dict(json.loads((out / "f.snapshot.json").read_bytes()))
