"""``fidoctor report`` end to end, as a real child process on real boxes.

A leaky box (planted user/home, API key, proxy credentials, addresses; the
machine's real host name) must leave no private value in the report or the
attached snapshot (raw file bytes); the report must carry the findings and
versions, parse as Markdown with the expected structure, and its attached
snapshot must replay (``fidoctor diagnose --from``) to the same findings.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from html import unescape
from pathlib import Path
from typing import List, Set, Tuple

import pytest
from conftest import DECODE, run_cli
from markdown_it import MarkdownIt
from report_helpers import USER, leaky_box, survivors

from fidoctor import __version__
from fidoctor.report import build
from fidoctor.snapshot.context import build_context
from fidoctor.snapshot.gather import all_gatherers
from fidoctor.snapshot.runner import gather_snapshot


def parse(md: str):
    """GitHub-flavoured enough: CommonMark + tables, raw HTML allowed (for <details>)."""
    mdi = MarkdownIt("commonmark").enable(["table", "strikethrough"])
    return mdi.parse(md), mdi.render(md)


def report_keys(html: str) -> Set[Tuple[str, str]]:
    """(finding id, subject) pairs as a reader sees them in the rendered report."""
    out = set()
    blocks = re.split(r"<h3>", html)[1:]
    for b in blocks:
        fid = re.search(r"<code>([a-z0-9-]+)</code></h3>", b).group(1)
        m = re.search(r"<p>Subject: <code>(.*?)</code></p>", b)
        out.add((fid, unescape(m.group(1)) if m else ""))
    return out


def run_report(args: List[str], env, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fidoctor", "report", *args], env=env,
                          cwd=str(cwd), capture_output=True, text=True, timeout=120)


@pytest.mark.timeout(180)
def test_leaky_box_report_is_redacted_parses_and_replays(box, tmp_path):
    env = leaky_box(box, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    r = run_report(["-o", "issue.md", "--attach-snapshot"], env, out)
    assert r.returncode == 0, r.stderr
    report, snap = out / "issue.md", out / "issue.snapshot.json"
    assert "redacted" in r.stderr and str(snap.name) in r.stderr
    # nothing private survives, anywhere, in the raw bytes of either file
    for f in (report, snap):
        assert survivors(f.read_bytes()) == [], f
    assert sorted(os.listdir(out)) == ["issue.md", "issue.snapshot.json"]  # no temp files left
    md = report.read_text()
    tokens, html = parse(md)
    # structure: title, verdict first, findings before versions, a table, details blocks
    heads = [(t.tag, tokens[i + 1].content) for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert heads[0][0] == "h1" and re.search(r"\(\d+ errors?, \d+ warnings?\)$", heads[0][1])
    h2 = [c for tag, c in heads if tag == "h2"]
    assert h2[:2] == ["Findings", "Versions"] and "Evidence" in h2
    first_para = next(tokens[i + 1].content for i, t in enumerate(tokens)
                      if t.type == "paragraph_open")
    assert first_para.startswith("**Verdict: ") and "errors" in first_para.split("**")[1]
    top_id = re.search(r"<h3>1\. ERROR <code>([a-z0-9-]+)</code>", html).group(1)
    assert f"The most likely cause is `{top_id}`" in first_para
    assert html.count("<table>") >= 2 and "<th>component</th>" in html
    assert html.count("<details>") == html.count("</details>") >= 4
    assert "<summary>Evidence (" in html and "<summary>JIT log &lt;home-1&gt;" in html
    assert '<code class="language-sh">fidoctor fix --only cache-incomplete-module' in html
    # placeholders render as text, never as (invisible) HTML tags
    assert not re.search(r"<(user|home|host|ip|mac|secret)-\d+>", html)
    assert "&lt;home-1&gt;/.cache/flashinfer/0.7.2.post1/90a" in html
    # errors on top, then warnings
    sev = re.findall(r"<h3>\d+\. (ERROR|WARNING|INFO) ", html)
    assert sev == sorted(sev, key=["ERROR", "WARNING", "INFO"].index) and sev[0] == "ERROR"
    # versions: fidoctor and the target's Python
    assert f"<td>fidoctor</td>\n<td>{__version__}</td>" in html
    py = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    assert f"<td>Python</td>\n<td>{py}</td>" in html
    # the log excerpt holds the unfinished line only, not the whole log
    log_block = html.split("<summary>JIT log", 1)[1].split("</details>", 1)[0]
    assert "Building JIT module single_prefill" in log_block and DECODE not in log_block
    # replay the attached snapshot elsewhere: same finding ids and subjects as the report
    shown = report_keys(html)
    # this box's findings (other boxes' builds on a shared machine may add their own)
    mine = {(i, s) for i, s in shown if s.startswith("<home-1>/")}
    assert sorted(i for i, _ in mine) == ["cache-incomplete-module", "cache-incomplete-module",
                                          "jit-log-unfinished"]
    clean = dict(os.environ, FLASHINFER_WORKSPACE_BASE=str(tmp_path / "elsewhere"))
    rep = run_cli(["diagnose", "--json", "--from", str(snap)], env=clean)
    assert rep.returncode == 1, rep.stderr
    replayed = {(f["id"], f["subject"]) for f in json.loads(rep.stdout)["findings"]}
    assert replayed == shown


def test_report_from_snapshot_redacts_without_the_machine(box, tmp_path):
    env = leaky_box(box, tmp_path)
    raw = tmp_path / "raw.json"
    r = run_cli(["snapshot", "--no-redact", "-o", str(raw)], env=env)
    assert r.returncode == 0, r.stderr
    assert USER.encode() in raw.read_bytes()  # the unredacted snapshot has it
    assert "NOT redacted" in r.stderr
    clean = dict(os.environ, NO_COLOR="1")
    rep = run_cli(["report", "--from", str(raw)], env=clean)
    assert rep.returncode == 0, rep.stderr
    assert survivors(rep.stdout.encode()) == []
    assert "cache-incomplete-module" in rep.stdout and "jit-log-unfinished" in rep.stdout


def test_no_redact_keeps_values_and_says_so(box, tmp_path):
    env = leaky_box(box, tmp_path)
    r = run_report(["--no-redact", "--attach-snapshot"], env, tmp_path)
    assert r.returncode == 0, r.stderr
    assert USER in r.stdout and "not redacted" in r.stdout
    assert "NOT redacted" in r.stderr
    assert USER in (tmp_path / "fidoctor-report.snapshot.json").read_text()


def test_healthy_box_verdict_and_not_checked(box):
    """Processes are left out on purpose: other tests' real builds share this machine's
    process table and would (rightly) be reported; the gap itself must be reported."""
    box.module(box.workspace(), DECODE)
    names = [g.name for g in all_gatherers() if g.name != "processes"]
    env = box.env(CUDA_HOME="/usr/local/cuda")  # a complete toolkit (this machine has one)
    snap = gather_snapshot(build_context(python=sys.executable, env=env), only=names)
    rep = build(snap)
    _, html = parse(rep.markdown)
    assert "<strong>Verdict: no problems found.</strong>" in html
    assert "<h2>Findings</h2>\n<p>None.</p>" in html
    assert "<h2>Not checked</h2>" in html and "inconclusive: missing facts: processes" in html


@pytest.mark.parametrize("args,needle", [
    (["--from", "/nonexistent/snap.json"], "cannot read snapshot"),
    (["-o", "/nonexistent-dir/r.md"], "cannot write /nonexistent-dir/r.md"),
])
def test_cannot_write_is_exit_2_one_line(box, args, needle):
    box.module(box.workspace(), DECODE)
    r = run_cli(["report", *args], env=box.env())
    assert r.returncode == 2
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert not os.path.exists("/nonexistent-dir")


@pytest.mark.timeout(240)
def test_seed_box_report_puts_cudart_missing_symbol_and_its_fix_on_top(tmp_path):
    """The issue's done-when: the seed-like box (real NVIDIA cudart wheels 12.4.127 in the
    venv, 12.9.79 in the toolkit, gcc-built modules; tests/cudart_helpers.py) with planted
    secrets: cudart-missing-symbol and its fix first, nothing private, replay matches."""
    from cudart_helpers import Seed
    from report_helpers import API_KEY, HF_TOKEN, IPV4, PROXY_URL

    root = tmp_path / "home" / USER
    root.mkdir(parents=True)
    seed = Seed(root)
    env = seed.env(HOME=str(root), USER=USER, LOGNAME=USER, HF_TOKEN=HF_TOKEN,
                   VLLM_API_KEY=API_KEY, SGLANG_HTTP_PROXY=PROXY_URL, VLLM_HOST_IP=IPV4)
    out = tmp_path / "out"
    out.mkdir()
    r = run_report(["--python", str(seed.v["python"]), "-o", "seed.md", "--attach-snapshot"],
                   env, out)
    assert r.returncode == 0, r.stderr
    for f in ("seed.md", "seed.snapshot.json"):
        assert survivors((out / f).read_bytes()) == [], f
    md = (out / "seed.md").read_text()
    _, html = parse(md)
    verdict = md.split("\n## ", 1)[0]
    assert "The most likely cause is `cudart-missing-symbol`" in verdict
    assert "Start with `export LD_PRELOAD=<home-1>/cuda-12.9/lib64/libcudart.so.12" in verdict
    first = html.split("<h3>", 2)[1]
    assert first.startswith("1. ERROR <code>cudart-missing-symbol</code>")
    fix = first.split('<code class="language-sh">', 1)[1].split("</code>", 1)[0]
    assert fix.startswith("export LD_PRELOAD=&lt;home-1&gt;/cuda-12.9/lib64/libcudart.so.12")
    assert "cudaGetDriverEntryPointByVersion" in first
    # the version table shows the skew a maintainer needs to see at a glance
    for cells in (("torch", "2.6.0+cu124"), ("pip CUDA runtime", "12.4.127"),
                  ("libcudart the target loads", "12.4.127"),
                  ("nvcc (toolkit FlashInfer uses)", "12.9.86")):
        assert f"<td>{cells[0]}</td>\n<td>{cells[1]}</td>" in html, cells
    shown = report_keys(html)
    rep = run_cli(["diagnose", "--json", "--from", str(out / "seed.snapshot.json")],
                  env=dict(os.environ, FLASHINFER_WORKSPACE_BASE=str(tmp_path / "elsewhere")))
    assert rep.returncode == 1, rep.stderr
    assert {(f["id"], f["subject"]) for f in json.loads(rep.stdout)["findings"]} == shown
    assert ("cudart-missing-symbol",
            "<home-1>/base/.cache/flashinfer/90/cached_ops/fmha_sm90_tma/fmha_sm90_tma.so") in shown


def test_damaged_snapshot_still_reports_and_says_what_it_could_not_show(box, tmp_path):
    """A hand-edited or damaged snapshot: parts it cannot render say so; exit 0, no traceback."""
    box.module(box.workspace(), DECODE, so="text")
    raw = tmp_path / "raw.json"
    assert run_cli(["snapshot", "-o", str(raw)], env=box.env()).returncode == 0
    d = json.loads(raw.read_text())
    d["sections"]["jitlog"]["data"]["logs"] = ["garbage", 5]
    d["sections"]["cache"]["data"]["workspaces"].append({"path": 3, "modules": "x"})
    raw.write_text(json.dumps(d))
    r = run_cli(["report", "--from", str(raw)], env=box.env())
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    assert "*JIT log excerpt not shown: the snapshot's data has an unexpected shape" in r.stdout
    _, html = parse(r.stdout)
    assert "<h2>Not checked</h2>" in html  # the probes that tripped on it are inconclusive
    # a wrong-typed context field is refused by the loader in one line (5f11141), not rendered
    d["context"]["env"] = ["not", "a", "dict"]
    raw.write_text(json.dumps(d))
    r = run_cli(["report", "--from", str(raw)], env=box.env())
    assert r.returncode == 2 and "not a fidoctor snapshot: context.env" in r.stderr


def test_many_findings_stay_short(box, tmp_path):
    ws = box.workspace()
    for i in range(25):
        box.module(ws, f"norm_{i:02d}", so="text", lock=False)
    out = tmp_path / "r.md"
    r = run_cli(["report", "-o", str(out), "--attach-snapshot"], env=box.env())
    assert r.returncode == 0, r.stderr
    _, html = parse(out.read_text())
    assert len(report_keys(html)) == html.count("<h3>") == 20  # full blocks, then a table
    mine = [k for k in report_keys(html) if "norm_" in k[1]]
    assert re.search(r"<summary>(\d+) more findings", html)
    extra = re.findall(r"<td><code>cache-incomplete-module</code></td>\n<td><code>(.*?)</code>",
                       html)
    assert len(mine) + len(extra) == 25
    rep = run_cli(["diagnose", "--json", "--from", str(tmp_path / "r.snapshot.json")])
    subjects = {f["subject"] for f in json.loads(rep.stdout)["findings"]
                if f["id"] == "cache-incomplete-module" and "norm_" in f["subject"]}
    assert subjects == {s for _, s in mine} | {unescape(s) for s in extra}
    assert len(out.read_bytes()) < 65536


@pytest.mark.timeout(120)
def test_pid_target_environment_is_redacted(box, tmp_path):
    """--pid reads the server's own /proc/PID/environ: its secrets must not leak either."""
    env = leaky_box(box, tmp_path)
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], env=env)
    try:
        clean = dict(os.environ, NO_COLOR="1")  # fidoctor itself runs with no planted values
        r = run_cli(["report", "--pid", str(server.pid)], env=clean)
        assert r.returncode == 0, r.stderr
        assert survivors(r.stdout.encode()) == []
        assert "| `VLLM_API_KEY` | `<secret-" in r.stdout and "| `USER` | `<user-" in r.stdout
        assert "jit-log-unfinished" in r.stdout  # the server's workspace, found via its env
    finally:
        server.kill()
        server.wait(timeout=10)
    assert server.poll() is not None


def test_report_says_its_command_line_and_how_the_target_was_chosen(box, tmp_path):
    """A maintainer reading a pasted report must tell a ``--pid`` diagnosis (the live
    server's environment) from one of fidoctor's own interpreter (the wrong patient).
    Before: the report named neither the command that made it nor how the target was
    chosen. The command line is redacted like the rest (the log lies under the planted
    home; the server's argv carries an API key that must not appear)."""
    env = leaky_box(box, tmp_path)
    log = Path(env["HOME"]) / "server.log"
    log.write_text("INFO: started\n")
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)",
                               "--api-key", "sk-planted-argv-key-55555"], env=env)
    try:
        clean = dict(os.environ, NO_COLOR="1")
        r = run_cli(["report", "--pid", str(server.pid), "--no-collect-env", "--log", str(log),
                     "--attach-snapshot", "-o", str(tmp_path / "r.md")], env=clean)
        assert r.returncode == 0, r.stderr
        md = (tmp_path / "r.md").read_text()
        assert survivors(md.encode(), ["sk-planted-argv-key-55555"]) == []
        assert f"Run as `fidoctor report --pid {server.pid} --no-collect-env --log <home-" in md
        assert f"Target chosen by: --pid {server.pid}" in md
        assert "2 IP addresses" in md and "addresss" not in md  # the footer's count
    finally:
        server.kill()
        server.wait(timeout=10)
    # replayed elsewhere: the report still says how the snapshot's target was chosen
    r = run_cli(["report", "--from", str(tmp_path / "r.snapshot.json")], env=clean)
    assert r.returncode == 0, r.stderr
    assert f"Target chosen by: --pid {server.pid}" in r.stdout
    assert "Run as `fidoctor report --from " in r.stdout


def test_module_dir_not_utf8_is_reported_with_its_bytes_shown(box, tmp_path):
    """A module dir whose name is not UTF-8 (bytes ``\\xff\\xfe``: a cache written under
    another locale) is a real incomplete module; ``report`` used to die on it with
    'internal error: UnicodeEncodeError' (exit 2, no report). Now the report is written,
    valid UTF-8, naming the bytes as ``\\xff\\xfe``, to a file and to stdout."""
    ws = box.workspace()
    box.module(ws, DECODE)
    odd = os.fsencode(ws / "cached_ops") + b"/mod_\xff\xfe_half"
    os.mkdir(odd)
    with open(odd + b"/build.ninja", "w") as f:
        f.write("ninja_required_version = 1.3\n")
    env = box.env()
    out = tmp_path / "r.md"
    r = run_cli(["report", "-o", str(out), "--no-collect-env"], env=env)
    assert r.returncode == 0, r.stderr
    md = out.read_bytes().decode("utf-8")  # strict: valid UTF-8
    assert "cache-incomplete-module" in md and "mod_\\xff\\xfe_half" in md
    p = subprocess.run([sys.executable, "-m", "fidoctor", "report", "-o", "-",
                        "--no-collect-env"], env=env, capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "mod_\\xff\\xfe_half" in p.stdout.decode("utf-8")
