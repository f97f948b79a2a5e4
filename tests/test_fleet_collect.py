"""``fidoctor fleet --ssh / --slurm / --ray``: collection from real daemons on this machine.

ssh: real OpenSSH sshd instances on loopback (a key made here, a port per
node), each started in ``unshare -u`` with its own host name and, through
``SetEnv``, its own FlashInfer workspace; one node's ``ForceCommand`` sleeps,
so it never answers within ``--timeout``.
"""

from __future__ import annotations

import json
import os
import sys

import pytest
from conftest import DECODE, FA3, Box, run_cli
from fleet_helpers import SshNodes, can_unshare_uts, ensure_openssh


def _box(tmp_path, built_so, name, broken=False):
    (tmp_path / name).mkdir()
    box = Box(tmp_path / name, built_so)
    ws = box.workspace()
    box.module(ws, DECODE)
    box.module(ws, FA3, so="truncated" if broken else "good")
    env = box.env()
    return {k: env[k] for k in ("FLASHINFER_WORKSPACE_BASE", "CUDA_HOME",
                                "FLASHINFER_EXTRA_LDFLAGS")}


@pytest.fixture
def ssh_fleet(tmp_path, built_so, procs):
    why = can_unshare_uts()
    if why:
        pytest.skip(why)
    why = ensure_openssh()
    if why or not os.path.exists("/usr/sbin/sshd"):
        pytest.skip(why or "no OpenSSH server")
    nodes = SshNodes(tmp_path, procs)
    for name, broken in (("node-a1", False), ("node-a2", False), ("node-b1", True)):
        nodes.node(name, _box(tmp_path, built_so, name, broken))
    return nodes


def test_ssh_collects_each_node_under_its_own_name(ssh_fleet):
    r = run_cli(["fleet", "--json", "--ssh", str(ssh_fleet.hostfile()), "--fidoctor", _fidoctor_cmd(),
                 "--level", "quick", "--timeout", "90", "--", *ssh_fleet.ssh_args()], timeout=150)
    doc = json.loads(r.stdout)
    assert doc["unreachable"] == [], doc["unreachable"]
    groups = {g["status"]: g for g in doc["groups"]}
    assert groups["healthy"]["nodes"] == ["node-a1", "node-a2"]
    assert groups["problems"]["nodes"] == ["node-b1"]
    assert "cache-incomplete-module" in groups["problems"]["ids"]
    assert {n["named_by"] for n in doc["nodes"]} == {"hostname"}
    assert r.returncode == 1


def test_a_node_that_never_answers_does_not_hold_the_summary(ssh_fleet, tmp_path):
    ssh_fleet.node("node-slow", {}, force="sleep 600")
    (tmp_path / "dead").mkdir()
    ssh_fleet.lines.append("127.0.0.1:1")  # nothing listens: connection refused
    r = run_cli(["fleet", "--json", "--ssh", str(ssh_fleet.hostfile()), "--fidoctor", _fidoctor_cmd(),
                 "--level", "quick", "--timeout", "20", "--per-node-timeout", "15", "--",
                 *ssh_fleet.ssh_args()], timeout=90)
    doc = json.loads(r.stdout)
    unreach = {u["node"]: u["reason"] for u in doc["unreachable"]}
    slow = [k for k in unreach if k != "127.0.0.1:1"]
    assert len(slow) == 1 and "timed out after 15 s" in unreach[slow[0]]
    assert "exit 255" in unreach["127.0.0.1:1"] and "refused" in unreach["127.0.0.1:1"]
    assert sorted(n["name"] for n in doc["nodes"]) == ["node-a1", "node-a2", "node-b1"]
    assert r.returncode == 1


def test_bad_hostfile_is_one_line(tmp_path):
    hf = tmp_path / "hosts"
    hf.write_text("-oProxyCommand=evil\n")
    r = run_cli(["fleet", "--ssh", str(hf)])
    assert r.returncode == 2 and "is not [user@]host[:port]" in r.stderr
    assert "Traceback" not in r.stderr


def _fidoctor_cmd() -> str:
    """The venv's console script: ``python -m`` would put the task's cwd first on sys.path."""
    exe = os.path.join(os.path.dirname(sys.executable), "fidoctor")
    return exe if os.path.exists(exe) else f"{sys.executable} -P -m fidoctor"


def test_slurm_runs_one_task_per_node_of_a_real_cluster(tmp_path, built_so, procs):
    """Two slurmd nodes; each node's tasks find their own workspace by host name."""
    from fleet_helpers import SlurmCluster, ensure_slurm

    why = can_unshare_uts() or ensure_slurm()
    if why:
        pytest.skip(why)
    cluster = SlurmCluster(tmp_path / "slurm", procs, nodes=("slurm-n1", "slurm-n2"))
    env = dict(cluster.env, **_box(tmp_path, built_so, "slurm-n2", broken=True))
    _box(tmp_path, built_so, "slurm-n1", broken=False)
    wrapper = tmp_path / "fidoctor-on-node"
    wrapper.write_text(f'#!/bin/sh\nexport FLASHINFER_WORKSPACE_BASE={tmp_path}/$(hostname)\n'
                       f'exec {_fidoctor_cmd()} "$@"\n')
    wrapper.chmod(0o755)
    r = run_cli(["fleet", "--json", "--slurm", "--fidoctor", str(wrapper), "--level", "quick",
                 "--timeout", "90", "--", "-N2"], env=env, timeout=150)
    doc = json.loads(r.stdout)
    assert doc["unreachable"] == [], doc["unreachable"]
    groups = {g["status"]: g for g in doc["groups"]}
    assert groups["healthy"]["nodes"] == ["slurm-n1"]
    assert groups["problems"]["nodes"] == ["slurm-n2"]
    assert "cache-incomplete-module" in groups["problems"]["ids"]
    assert r.returncode == 1


def test_ray_runs_one_pinned_task_per_alive_node(tmp_path, built_so):
    """A real Ray cluster of two raylets (head + worker, ``ray start``), each its own host name."""
    from fleet_helpers import RayCluster, ray_python

    why = can_unshare_uts()
    if why:
        pytest.skip(why)
    py = ray_python()
    cluster = RayCluster(py, {"ray-head": _box(tmp_path, built_so, "head", broken=False),
                              "ray-w1": _box(tmp_path, built_so, "w1", broken=True)})
    try:
        r = run_cli(["fleet", "--json", "--ray", cluster.address, "--ray-python", py,
                     "--fidoctor", _fidoctor_cmd(), "--level", "quick", "--timeout", "150"],
                    env=cluster.env, timeout=240)
    finally:
        cluster.stop()
    doc = json.loads(r.stdout)
    assert doc["unreachable"] == [], (doc["unreachable"], r.stderr[-2000:])
    groups = {g["status"]: g for g in doc["groups"]}
    assert groups["healthy"]["nodes"] == ["ray-head"]  # each raylet's tasks get its own env
    assert groups["problems"]["nodes"] == ["ray-w1"]
    assert "cache-incomplete-module" in groups["problems"]["ids"]
    assert r.returncode == 1


@pytest.fixture
def bare_nodes(tmp_path, procs):
    """sshd nodes with an empty workspace each (quick diagnose has nothing to judge)."""
    why = can_unshare_uts() or ensure_openssh()
    if why or not os.path.exists("/usr/sbin/sshd"):
        pytest.skip(why or "no OpenSSH server")
    return SshNodes(tmp_path, procs)


def _empty_ws(tmp_path, name):
    (tmp_path / name).mkdir()
    return {"FLASHINFER_WORKSPACE_BASE": str(tmp_path / name)}


def test_hostfile_with_ipv6_comments_blanks_and_duplicates(bare_nodes, tmp_path):
    """A site's host file: an IPv6 node as ``[::1]:PORT``, a bare IPv6 address (its port
    from ``-- -p``), comments, blank lines and a host listed twice. Each host is one node,
    reached at the address written (ssh takes IPv6 without brackets; ``fe80::1`` is not host
    ``fe80:`` port 1). Before: ``[::1]`` was passed to ssh as a host name it cannot resolve,
    ``::1`` became host ``:`` port 1, and a duplicated line was diagnosed and counted twice."""
    from fleet_helpers import ipv6_loopback

    why = ipv6_loopback()
    if why:
        pytest.skip(why)
    p6 = bare_nodes.node("node-v6", _empty_ws(tmp_path, "node-v6"), listen="::1")
    p4 = bare_nodes.node("node-v4", _empty_ws(tmp_path, "node-v4"))
    hf = tmp_path / "hosts"
    hf.write_text(f"# the fleet\n\n[::1]:{p6}   # the IPv6 node\n  127.0.0.1:{p4}\n"
                  f"127.0.0.1:{p4}\n\n# end\n")
    args = ["fleet", "--json", "--fidoctor", _fidoctor_cmd(), "--level", "quick",
            "--timeout", "60"]
    r = run_cli([*args, "--ssh", str(hf), "--", *bare_nodes.ssh_args()], timeout=120)
    doc = json.loads(r.stdout)
    assert doc["unreachable"] == [], doc["unreachable"]
    assert sorted(n["name"] for n in doc["nodes"]) == ["node-v4", "node-v6"]

    bare = tmp_path / "hosts-bare"
    bare.write_text("::1\n")
    r = run_cli([*args, "--ssh", str(bare), "--", "-p", str(p6), *bare_nodes.ssh_args()],
                timeout=120)
    doc = json.loads(r.stdout)
    assert doc["unreachable"] == [], doc["unreachable"]
    assert [n["name"] for n in doc["nodes"]] == ["node-v6"]


def test_hostfile_ipv6_parsing_and_refusals(tmp_path):
    """The parser alone, on lines no sshd here can answer (link-local, documentation
    addresses): the destination and port ssh is given."""
    from fidoctor.fleet.collect import read_hostfile

    hf = tmp_path / "hosts"
    hf.write_text("fe80::1\nalice@[2001:db8::5]:2222\n2001:db8::7\ngpu1\nGPU1:22\n"
                  "bob@gpu2:2200\n")
    assert read_hostfile(str(hf)) == [
        ("fe80::1", None, "fe80::1"), ("alice@2001:db8::5", "2222", "alice@[2001:db8::5]:2222"),
        ("2001:db8::7", None, "2001:db8::7"), ("gpu1", None, "gpu1"),
        ("bob@gpu2", "2200", "bob@gpu2:2200")]
    hf.write_bytes(b"\xef\xbb\xbfgpu1\r\ngpu2\r\n")  # saved by a Windows editor: BOM, CRLF
    assert [h[0] for h in read_hostfile(str(hf))] == ["gpu1", "gpu2"]
    for bad in ("gpu1:99999", "-oProxyCommand=x", "[::1", "a b"):
        hf.write_text(bad + "\n")
        r = run_cli(["fleet", "--ssh", str(hf)])
        assert r.returncode == 2 and "is not [user@]host[:port]" in r.stderr, (bad, r.stderr)


def test_fidoctor_in_the_node_users_home_is_reached_with_a_tilde(bare_nodes, tmp_path):
    """README's install (pipx / ``uv tool``) puts fidoctor in ``~/.local/bin``, which a
    non-interactive ssh shell often lacks on PATH: the node answers "command not found".
    The reason now says how to name it, and ``--fidoctor '~/.local/bin/fidoctor'`` reaches it
    (the node's shell expands ``~``). Before: the reason was bash's line alone, and every
    spelling of the node user's home was quoted past the shell ("No such file or
    directory"). The node's HOME is the test's own dir (sshd ``SetEnv``)."""
    home = tmp_path / "nodehome"
    (home / ".local" / "bin").mkdir(parents=True)
    wrapper = home / ".local" / "bin" / "fidoctor"
    wrapper.write_text(f'#!/bin/sh\nexec {_fidoctor_cmd()} "$@"\n')
    wrapper.chmod(0o755)
    port = bare_nodes.node("node-pipx", {"HOME": str(home), "FLASHINFER_WORKSPACE_BASE": str(home)})
    hf = tmp_path / "hosts"
    hf.write_text(f"127.0.0.1:{port}\n")
    args = ["fleet", "--json", "--ssh", str(hf), "--level", "quick", "--timeout", "60"]
    r = run_cli([*args, "--fidoctor", "fidoctor-not-on-this-path", "--", *bare_nodes.ssh_args()],
                timeout=120)
    [u] = json.loads(r.stdout)["unreachable"]
    assert u["reason"].startswith("exit 127, no fidoctor there: --fidoctor PATH"), u
    assert "command not found" in u["reason"] and r.returncode == 2
    r = run_cli([*args, "--fidoctor", "~/.local/bin/fidoctor", "--", *bare_nodes.ssh_args()],
                timeout=120)
    doc = json.loads(r.stdout)
    assert doc["unreachable"] == [] and [n["name"] for n in doc["nodes"]] == ["node-pipx"]


def test_python_points_each_nodes_diagnose_at_the_serving_venv(bare_nodes, tmp_path):
    """README's layout (fidoctor in its own venv, the server in another) over ssh: without a
    way to name the serving venv, every node's full diagnose examined fidoctor's own
    interpreter (no FlashInfer: not checked, or target-lacks-flashinfer on every node). Now
    ``fleet --python PATH`` passes ``diagnose --python PATH`` on: the node reports the real
    serving venv's FlashInfer (CPU torch + flashinfer-python 0.7.2.post1)."""
    from warmup_helpers import stub_libcuda, target_venv

    py = str(target_venv())
    env = dict(_empty_ws(tmp_path, "node-venv"), CUDA_HOME="/usr/local/cuda",
               FLASHINFER_EXTRA_LDFLAGS=f"-L{stub_libcuda()}")  # a usable toolkit, as Box has
    port = bare_nodes.node("node-venv", env)
    hf = tmp_path / "hosts"
    hf.write_text(f"127.0.0.1:{port}\n")
    base = ["fleet", "--json", "--ssh", str(hf), "--fidoctor", _fidoctor_cmd(),
            "--timeout", "120"]
    r = run_cli([*base, "--python", py, "--", *bare_nodes.ssh_args()], timeout=200)
    doc = json.loads(r.stdout)
    assert doc["unreachable"] == [], doc["unreachable"]
    [node] = doc["nodes"]
    assert node["name"] == "node-venv" and node["status"] == "healthy", doc
    # without it: fidoctor's own interpreter, no FlashInfer (not checked, or target-lacks-…)
    r = run_cli([*base, "--", *bare_nodes.ssh_args()], timeout=200)
    assert json.loads(r.stdout)["nodes"][0]["status"] != "healthy", r.stdout
    r = run_cli(["fleet", "--python", py, str(hf)])
    assert r.returncode == 2 and "--python names the nodes' interpreter" in r.stderr
