"""Redaction as a pass of its own: what it hides, what it must leave alone, and that a
redacted snapshot (gathered for real from a leaky box) still replays to the same findings."""

from __future__ import annotations

import json
import re
import socket

import pytest
from conftest import snapshot_of
from report_helpers import (
    API_KEY,
    HF_TOKEN,
    IPV4,
    IPV6,
    MAC,
    PLANTED,
    PROXY_PASS,
    PROXY_URL,
    PROXY_USER,
    SHORT_SECRET,
    USER,
    leaky_box,
    survivors,
)

from fidoctor.diagnosis import diagnose
from fidoctor.report import build, keys
from fidoctor.report.redact import Redactor, is_secret_key
from fidoctor.snapshot import Snapshot
from fidoctor.snapshot.context import build_context
from fidoctor.snapshot.runner import gather_snapshot


def test_same_value_same_placeholder_and_distinct_values_distinct():
    r = Redactor()
    r.add("user", "alice")
    r.add("user", "bob")
    out = r.text("/home/alice/x and /home/bob/y and again /home/alice/z")
    assert out == "/home/<user-1>/x and /home/<user-2>/y and again /home/<user-1>/z"
    assert r.summary() == {"user": 2}


def test_home_paths_teach_user_names_even_unannounced():
    r = Redactor()
    out = r.text("cwd=/home/carol/work PATH=/Users/dave/bin:/usr/bin")
    assert "carol" not in out and "dave" not in out
    assert out == "cwd=/home/<user-1>/work PATH=/Users/<user-2>/bin:/usr/bin"


@pytest.mark.parametrize("text,hidden,kept", [
    ("proxy http://u1ser:p4ssw0rd@proxy:3128/", ["u1ser", "p4ssw0rd"], ["proxy:3128"]),
    ("export HF_TOKEN=hf_abcdefghijklmnopqrstuvwxyz ok", ["hf_abcdefghijklmnopqrstuvwxyz"],
     ["HF_TOKEN="]),
    ("Authorization sk-abcdefghijklmnopqrstuvwx", ["sk-abcdefghijklmnopqrstuvwx"], []),
    ("listening on 10.1.2.3:8000", ["10.1.2.3"], [":8000"]),
    ("peer fe80::1ff:fe23:4567:890a%eth0 up", ["fe80::1ff:fe23:4567:890a%eth0"], ["up"]),
    ("link/ether 02:42:ac:11:00:02 brd", ["02:42:ac:11:00:02"], ["brd"]),
    ("MAC 02-42-AC-11-00-02", ["02-42-AC-11-00-02"], []),
    ("python -m vllm serve m --api-key sk-abc-123456 --port 8000 --hf-token=hf_x1234567 …",
     ["sk-abc-123456", "hf_x1234567"], ["--port 8000", "--api-key", "--hf-token="]),
])
def test_patterns_hide_what_they_should(text, hidden, kept):
    out = Redactor().text(text)
    for h in hidden:
        assert h not in out, out
    for k in kept:
        assert k in out, out
    assert "<" in out


@pytest.mark.parametrize("text", [
    "2026-11-23 05:41:55,123 - INFO - core.py:594 - flashinfer.jit: Building JIT module x",
    "c10::Error at::Tensor std::vector<int>",
    "127.0.0.1 and 0.0.0.0 and ::1 are not private",
    "torch 2.11.0+cu130, nvidia-cuda-runtime-cu12 12.4.127, driver 580.159.04",
    "/usr/local/cuda/bin:/usr/bin::/bin",
    "dev 00:2a inode 1234 FLOCK WRITE",
    "flashinfer_root cache_fs root_kind ninja_lock",
])
def test_patterns_leave_ordinary_text_alone(text):
    r = Redactor()
    assert r.text(text) == text
    assert r.summary() == {}


def test_version_keys_are_not_addresses():
    r = Redactor()
    tree = r.tree({"nvidia-cudnn-cu12": {"version": "9.1.0.70"}, "peer": "9.1.0.70"})
    assert tree["nvidia-cudnn-cu12"]["version"] == "9.1.0.70"


def test_short_host_name_is_a_token_not_a_substring():
    r = Redactor()
    r.add("host", "vm")
    assert r.text("llvm on vm, /srv/vm/x, vmlinuz") == "llvm on <host-1>, /srv/<host-1>/x, vmlinuz"


def test_secret_keys_and_argv_flags():
    assert is_secret_key("HF_TOKEN") and is_secret_key("VLLM_API_KEY")
    assert is_secret_key("AWS_SECRET") and is_secret_key("DB_PASSWORD")
    assert not is_secret_key("CUDA_HOME") and not is_secret_key("ninja_lock")
    assert not is_secret_key("FLASHINFER_CUDA_ARCH_LIST") and not is_secret_key("key")
    r = Redactor()
    tree = r.tree({"env": {"MY_SERVICE_TOKEN": "abc", "PATH": "/bin"},
                   "argv": ["vllm", "serve", "--api-key", "s3cr3t-value", "--hf-token=tok3n-xyz"]})
    assert tree["env"]["MY_SERVICE_TOKEN"] == "<secret-1>"  # short, but its key says secret
    assert tree["env"]["PATH"] == "/bin"
    assert tree["argv"][:3] == ["vllm", "serve", "--api-key"]
    assert "s3cr3t-value" not in json.dumps(tree) and "tok3n-xyz" not in json.dumps(tree)


def test_placeholders_are_never_redacted_again():
    r = Redactor()
    r.add("user", "alice")
    once = r.text("/home/alice")
    assert r.text(once) == once
    assert r.add("user", "<user-1>") is None


def test_real_snapshot_redacted_everywhere_and_replays(box, tmp_path):
    env = leaky_box(box, tmp_path)
    snap = gather_snapshot(build_context(env=env))
    raw = json.dumps(snap.to_dict())
    assert USER in raw and API_KEY in raw and PROXY_PASS in raw and IPV4 in raw  # planted
    assert HF_TOKEN not in raw  # not whitelisted by the context: never recorded at all
    r = Redactor().learn(snap.to_dict()).learn_local(env)
    red = r.tree(snap.to_dict())
    dumped = json.dumps(red).encode()
    assert survivors(dumped) == []
    assert socket.gethostname() not in red["sections"]["host"]["data"]["hostname"]
    renv = red["context"]["env"]
    assert renv["FLASHINFER_DB_PASSWORD"].startswith("<secret-")
    assert SHORT_SECRET not in renv.values()
    assert renv["VLLM_API_KEY"] == "<secret-1>" or renv["VLLM_API_KEY"].startswith("<secret-")
    # issue 14: an internal DNS name is private too; the URL keeps its shape
    assert re.fullmatch(r"http://<user-\d+>:<secret-\d+>@<host-\d+>:3128",
                        renv["SGLANG_HTTP_PROXY"]), renv["SGLANG_HTTP_PROXY"]
    assert renv["HOME"] == renv["FLASHINFER_WORKSPACE_BASE"] == "<home-1>"
    assert renv["USER"] == renv["LOGNAME"]
    assert renv["CUDA_VISIBLE_DEVICES"] == "0,1"
    # dict keys that are paths (the elf section) are redacted too
    elf = red["sections"].get("elf", {}).get("data", {}).get("modules", {})
    assert elf and all(k.startswith("<home-1>/") for k in elf)
    # the redacted snapshot replays to the same findings, paths redacted identically
    orig = diagnose(snap)
    replay = diagnose(Snapshot.from_dict(red))
    assert keys(orig.findings)  # the box is broken: there is something to compare
    assert sorted((i, r.text(s)) for i, s in keys(orig.findings)) == keys(replay.findings)


def test_build_reports_no_mismatch_and_no_planted_value(box, tmp_path):
    env = leaky_box(box, tmp_path)
    snap = snapshot_of(box, **{k: v for k, v in env.items() if k not in ("NO_COLOR",)})
    rep = build(snap, local_env=env)
    assert rep.replay_mismatch == []
    assert survivors(rep.markdown.encode()) == []
    assert survivors(json.dumps(rep.snapshot.to_dict()).encode()) == []
    assert set(rep.redaction) >= {"user", "home", "secret", "ip", "mac"}
    plain = build(snap, redact=False)
    assert plain.redaction is None and USER in plain.markdown
    assert all(v not in PLANTED for v in rep.redaction)  # the summary counts, never values
    assert PROXY_URL not in rep.markdown and PROXY_USER not in rep.markdown
    assert IPV6 not in rep.markdown and MAC not in rep.markdown


def test_summary_counts_only_what_was_replaced():
    r = Redactor().learn_local({"HOME": "/home/someone", "USER": "someone"})
    assert r.text("nothing private here") == "nothing private here"
    assert r.summary() == {}  # learned the local names, but nothing was hidden
    r.text("/home/someone/x")
    assert r.summary() == {"home": 1}
