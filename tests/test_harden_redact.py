"""Issue 14, class 8: redaction by shape as well as by name, on a planted-secret box.

Secrets are planted where real boxes hold them: the serving environment (names beyond
the old list, plural names, a credentialed database URL with a one-letter user and
password, a bearer header with a JWT, a PEM block, an internal DNS name), the argv of the
live server above a stuck build (``--wandb_key=``, a short ``--api-key``), JIT log lines
(lower-case ``token=``, ``Authorization: Bearer``), a home directory outside /home, and
another user's build in another cache on the same box. Nothing planted may reach the
report, the attached snapshot or a plain ``fidoctor snapshot``; no version is mangled.
"""

from __future__ import annotations

import json
import textwrap
import time

import pytest
from conftest import DECODE, FA2, Box, log_line, run_cli
from proc_helpers import fakecc, make_fifo, script, wait_for, write_module
from report_helpers import hostname_tokens

from fidoctor.report.redact import Redactor

pytestmark = pytest.mark.timeout(180)

NAME = "qzjanedoe4"  # a real-looking user name, in a home outside /home
JWT = ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJwbGFudGVkLXVzZXIifQ."
       "c2lnbmF0dXJlUGxhbnRlZDEyMzQ1Njc4OTA")
PEM_BODY = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDPlantedPem"
ENV = {
    "NVIDIA_API_KEYS": "nvapi-PlantedPluralKeys0001",
    "VLLM_DATABASE_URL": "postgres://u:p@db17.corp.example.com:5432/prod",
    "SGLANG_AUTH_HEADER": f"Authorization: Bearer {JWT}",
    "VLLM_TLS_PEM": f"-----BEGIN PRIVATE KEY-----\n{PEM_BODY}\n-----END PRIVATE KEY-----",
    "FLASHINFER_NOTE": "retry with token=tk9z later",
    "VLLM_HOST": "node17.corp.example.com",
    "VLLM_PASS": "pw1",
    "VLLM_MAPPED_ADDR": "::ffff:10.9.8.7",
    "WANDB_API_KEY": "wandb-planted-0123456789",
    "AWS_SECRET_ACCESS_KEY": "awsPlantedSecretAccessKey0123",
    "HF_HUB_TOKEN": "hf_PlantedHubTokenAbcdefghijklmnop",
    "VLLM_VERSIONS": "ninja 1.11.1.4, cuDNN 9.1.0.70, libcudnn.so.9.1.0.70",
    "CUDA_VISIBLE_DEVICES": "0,1",
}
ARGV_SECRETS = ["--wandb_key=wk-planted-77", "--api-key", "ak1"]
FOREIGN_SECRET = "foreignPlantedSecret99"
LOG_SECRET = "tkLogPlanted5"
PLANTED = [
    NAME, "nvapi-PlantedPluralKeys0001", "postgres://u:p@", "db17.corp.example.com", JWT,
    PEM_BODY, "tk9z", "node17.corp.example.com", "pw1", "10.9.8.7", "wandb-planted-0123456789",
    "awsPlantedSecretAccessKey0123", "hf_PlantedHubTokenAbcdefghijklmnop", "wk-planted-77",
    '"ak1"', FOREIGN_SECRET, LOG_SECRET,
]
VERSIONS = ["ninja 1.11.1.4", "cuDNN 9.1.0.70", "libcudnn.so.9.1.0.70"]

SERVER = textwrap.dedent('''
    """A stand-in server whose argv carries secrets: flock, ninja, wait."""
    import fcntl, os, subprocess, sys
    lock, moddir = sys.argv[1], sys.argv[2]
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    subprocess.run(["/usr/bin/ninja", "-C", moddir], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
''')


def leaks(raw: str):
    found = [v for v in PLANTED if v in raw]
    return found + [f"hostname {t!r}" for t in hostname_tokens(raw)]


def stuck_build(procs, box, ws, name, fifo, *secrets):
    write_module(ws, name, f"--fifo {fifo}")
    server = script(procs.tmp, f"server-{name}.py", SERVER)
    lock = ws / "cached_ops" / "tmp" / f"{name}.lock"
    p = procs.python(server, lock, ws / "cached_ops" / name, *secrets, env=box.env())
    wait_for(lambda: procs.find("nvcc"), what="nvcc running")
    return p


@pytest.fixture
def planted(tmp_path, built_so, procs):
    home = tmp_path / "data" / "people" / NAME
    home.mkdir(parents=True)
    box = Box(home, built_so)
    ws = box.workspace()
    box.module(ws, DECODE)
    box.module(ws, FA2, so="text")
    now = time.time()
    box.log(ws, [
        log_line("new", "building", DECODE, now - 600),
        log_line("new", "building", FA2, now - 90).rstrip("\n")
        + f"; token={LOG_SECRET} Authorization: Bearer {JWT}\n",
    ])
    fakecc()
    fifo = make_fifo(tmp_path / "never.fifo")
    stuck_build(procs, box, ws, "norm_planted", fifo, *ARGV_SECRETS)
    # Another user's build in another cache on the same box: none of the report's business.
    other = Box(tmp_path / "other-user", built_so)
    stuck_build(procs, other, other.workspace(), "norm_foreign", fifo,
                "--api-key", FOREIGN_SECRET)
    env = box.env(HOME=str(home), **ENV)
    env.pop("USER", None)
    env.pop("LOGNAME", None)
    return box, env


def test_nothing_planted_leaks_and_no_version_is_mangled(planted, tmp_path):
    box, env = planted
    out = tmp_path / "out"
    out.mkdir()
    r = run_cli(["report", "-o", str(out / "r.md"), "--attach-snapshot"], env=env)
    assert r.returncode == 0, r.stderr
    s = run_cli(["snapshot", "-o", str(out / "s.json")], env=env)
    assert s.returncode == 0, s.stderr
    unredacted = run_cli(["snapshot", "--no-redact"], env=env).stdout
    # The planted values really were gathered (else this test proves nothing)...
    for v in ("nvapi-PlantedPluralKeys0001", "wk-planted-77", LOG_SECRET, NAME, FOREIGN_SECRET):
        assert v in unredacted, v
    # ...and none survives redaction anywhere.
    for f in ("r.md", "r.snapshot.json", "s.json"):
        raw = (out / f).read_text()
        assert leaks(raw) == [], (f, leaks(raw))
    snap = json.loads((out / "s.json").read_text())
    assert snap["context"]["env"]["VLLM_VERSIONS"] == ENV["VLLM_VERSIONS"]
    md = (out / "r.md").read_text()
    for v in VERSIONS:
        assert v in md
    # Only the target's build trees are in the process sections.
    for f in ("r.snapshot.json", "s.json"):
        procs = json.loads((out / f).read_text())["sections"]["processes"]["data"]["processes"]
        assert procs and not any("norm_foreign" in json.dumps(p) for p in procs)
    # (The report may still name other live servers as candidates for --pid, in
    # target-lacks-flashinfer's evidence: issue 12's design; their argv never appears.)
    assert "Build processes" not in md or "norm_foreign" not in md.split("Build processes")[1][:3000]
    # Still a report of the box: the findings are there.
    assert "cache-incomplete-module" in md


@pytest.mark.parametrize("text", [
    "ninja 1.11.1.4", "cuDNN 9.1.0.70", "libcudnn.so.9.1.0.70", "nvidia-cudnn-cu12 9.1.0.70",
    "nvidia_cudnn_cu12-9.1.0.70", "--tokenizer meta-llama/Llama-3-8B --max-num-batched-tokens 8192",
    "flashinfer.jit: Building JIT module x", "import torch.cuda.is_available",
    "pip install torch --index-url https://download.pytorch.org/whl/cu124",
])
def test_versions_and_ordinary_text_are_kept(text):
    assert Redactor().text(text) == text


@pytest.mark.parametrize("text,secret", [
    ("listening on ::ffff:10.0.0.1 now", "10.0.0.1"),
    ("auth token: abc123xyz", "abc123xyz"),
    ("export SOME_SERVICE_PASSWD=pw", "=pw"),
    ("python serve.py --hf_token hf1 --port 1", "hf1"),
    ("curl https://ghp_abcdefghij0123456789@github.com/x", "ghp_abcdefghij0123456789"),
])
def test_shapes_are_hidden_where_they_stand(text, secret):
    out = Redactor().text(text)
    assert secret not in out and "<" in out, out
