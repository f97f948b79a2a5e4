"""Real nodes on one machine for ``fidoctor fleet --ssh/--slurm/--ray`` tests.

A node is a real daemon started inside ``unshare -u`` with its own host name,
so everything it runs (``fidoctor diagnose``) reports that name; its own
workspace and environment come from the daemon's configuration.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0, host: str = "127.0.0.1") -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(family) as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {host}:{port} after {timeout} s")


def ipv6_loopback() -> str:
    """'' when ::1 can be bound here, else why not."""
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError as e:
        return f"no IPv6 loopback: {e}"
    return ""


def can_unshare_uts() -> str:
    if not shutil.which("unshare"):
        return "no unshare"
    r = subprocess.run(["unshare", "-u", "hostname", "fidoctor-probe"], capture_output=True,
                       text=True, timeout=10)
    return "" if r.returncode == 0 else f"unshare -u refused: {r.stderr.strip()[:200]}"


class SshNodes:
    """sshd instances on loopback, one per node, with a client key made here."""

    def __init__(self, tmp: Path, procs) -> None:
        self.tmp, self.procs = tmp, procs
        self.key = tmp / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)],
                       check=True)
        (tmp / "authorized_keys").write_text((tmp / "id_ed25519.pub").read_text())
        (tmp / "authorized_keys").chmod(0o600)
        self.hostkey = tmp / "host_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.hostkey)],
                       check=True)
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation dir
        self.lines: List[str] = []

    def node(self, name: str, env: Dict[str, str], force: Optional[str] = None,
             listen: str = "127.0.0.1") -> int:
        port = free_port()
        cfg = self.tmp / f"sshd_{name}.conf"
        setenv = " ".join(f'"{k}={v}"' for k, v in env.items())
        cfg.write_text("\n".join([
            f"Port {port}", f"ListenAddress {listen}", f"HostKey {self.hostkey}",
            f"AuthorizedKeysFile {self.tmp / 'authorized_keys'}", "StrictModes no",
            "UsePAM no", "PermitRootLogin prohibit-password", "PasswordAuthentication no",
            f"PidFile {self.tmp / f'sshd_{name}.pid'}", f"SetEnv {setenv}" if env else "",
            f"ForceCommand {force}" if force else "", ""]))
        self.procs.start(["unshare", "-u", "sh", "-c",
                          f"hostname {name} && exec /usr/sbin/sshd -D -e -f {cfg}"])
        wait_port(port, host=listen)
        self.lines.append(f"[{listen}]:{port}" if ":" in listen else f"{listen}:{port}")
        return port

    def hostfile(self) -> Path:
        p = self.tmp / "hosts"
        p.write_text("# the fleet\n" + "\n".join(self.lines) + "\n")
        return p

    def ssh_args(self) -> List[str]:
        return ["-i", str(self.key), "-o", f"UserKnownHostsFile={self.tmp / 'known_hosts'}",
                "-o", "StrictHostKeyChecking=no", "-o", "LogLevel=ERROR"]


def apt_install(*pkgs: str) -> str:
    """Install Debian packages (CI starts bare); '' or why not."""
    if not shutil.which("apt-get"):
        return "no apt-get"
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    base = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "-y", "-qq", "install",
            "--no-install-recommends", *pkgs]
    r = subprocess.run(base, env=env, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=300", "update", "-qq"], env=env,
                       capture_output=True, timeout=600)
        r = subprocess.run(base, env=env, capture_output=True, text=True, timeout=900)
    return "" if r.returncode == 0 else f"apt-get install {' '.join(pkgs)}: " + \
        (r.stderr.strip().splitlines() or ["?"])[-1]


def ensure_openssh() -> str:
    import os

    if shutil.which("ssh") and os.path.exists("/usr/sbin/sshd"):
        return ""
    return apt_install("openssh-client", "openssh-server")


def ensure_slurm() -> str:
    if all(shutil.which(x) for x in ("srun", "slurmctld", "slurmd", "munged")):
        return ""
    return apt_install("slurm-wlm", "munge")


class SlurmCluster:
    """A real Slurm controller and node daemons on localhost, with their own munged.

    Each node is a slurmd of its own (``-N NAME``, its own ``Port=``), started in
    ``unshare -u`` with the node's name as host name.
    """

    def __init__(self, tmp: Path, procs, nodes=("slurm-n1",),
                 extra: Optional[List[str]] = None) -> None:
        import os

        self.tmp = tmp
        m = tmp / "munge"
        m.mkdir(mode=0o700, parents=True)
        (m / "munge.key").write_bytes(os.urandom(128))
        (m / "munge.key").chmod(0o600)
        procs.start(["munged", "-F", "-f", "-S", str(m / "sock"), f"--key-file={m / 'munge.key'}",
                     f"--log-file={m / 'log'}", f"--pid-file={m / 'pid'}",
                     f"--seed-file={m / 'seed'}"])
        deadline = time.monotonic() + 20
        while not (m / "sock").exists():
            assert time.monotonic() < deadline, "munged did not start"
            time.sleep(0.05)
        p1, p2 = free_port(), free_port()
        self.nodes = list(nodes)
        (tmp / "state").mkdir()
        (tmp / "spool").mkdir()
        self.conf = tmp / "slurm.conf"
        self.conf.write_text("\n".join([
            "ClusterName=fid", f"SlurmctldHost={socket.gethostname()}(127.0.0.1)",
            f"SlurmctldPort={p1}", f"SlurmdPort={p2}", "AuthType=auth/munge",
            f"AuthInfo=socket={m / 'sock'}", "CredType=cred/munge",
            f"StateSaveLocation={tmp / 'state'}", f"SlurmdSpoolDir={tmp / 'spool'}/%n",
            f"SlurmctldPidFile={tmp / 'slurmctld.pid'}", f"SlurmdPidFile={tmp}/slurmd-%n.pid",
            f"SlurmctldLogFile={tmp / 'slurmctld.log'}", f"SlurmdLogFile={tmp}/slurmd-%n.log",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/linear", "MpiDefault=none", "SlurmUser=root", "SlurmdUser=root",
            "ReturnToService=2", "SchedulerType=sched/builtin",
            "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
            *(f"NodeName={n} NodeHostname={n} NodeAddr=127.0.0.1 Port={free_port()} CPUs=1 "
              "RealMemory=500 State=UNKNOWN" for n in self.nodes),
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=10 State=UP",
            *(extra or []), ""]))
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        procs.start(["slurmctld", "-D", "-i", "-f", str(self.conf)], env=self.env)
        for n in self.nodes:
            procs.start(["unshare", "-u", "sh", "-c",
                         f"hostname {n} && exec slurmd -D -N {n} -f {self.conf}"], env=self.env)
        deadline = time.monotonic() + 60
        while True:
            r = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=self.env,
                               capture_output=True, text=True, timeout=30)
            if r.stdout.split() == ["idle"] * len(self.nodes):
                break
            assert time.monotonic() < deadline, f"slurm node not idle: {r.stdout}{r.stderr}"
            time.sleep(0.3)


RAY_VERSION = "2.40.0"


def ray_python() -> str:
    """A venv with ray (pinned), built once under the test cache and locked while built."""
    from warmup_helpers import _locked, cache_root, target_python

    # The target venv's interpreter (CI's highest Python, 3.13, has no wheel of this ray).
    base = target_python()
    ver = subprocess.run([base, "-c", "import sys; print('%d%d' % sys.version_info[:2])"],
                         capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    venv = cache_root() / f"ray-{RAY_VERSION}-py{ver}"
    py = venv / "bin" / "python"
    with _locked(cache_root() / (venv.name + ".lock")):
        if not (venv / ".done").exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([base, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(py), "-m", "pip", "install", "-q", f"ray=={RAY_VERSION}"],
                           check=True, timeout=1200)
            (venv / ".done").write_text("ok\n")
    return str(py)


class RayCluster:
    """``ray start --head`` and one worker, each raylet in ``unshare -u`` with its own name.

    Ray's sockets live under a short temp dir (unix socket paths are capped at 107 bytes);
    ``stop`` kills, by pid, every process whose command line names that dir.
    """

    def __init__(self, python: str, node_env: Dict[str, Dict[str, str]]) -> None:
        """``node_env``: host name → the environment its raylet (and so its tasks) runs with;
        the first is the head."""
        import os
        import tempfile

        self.tmp = tempfile.mkdtemp(prefix="fr", dir="/tmp")
        self.port = free_port()
        ray = str(Path(python).parent / "ray")
        self.env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
        head = (f"{ray} start --head --node-ip-address=127.0.0.1 --port={self.port} "
                f"--num-cpus=1 --include-dashboard=false --temp-dir={self.tmp} "
                "--disable-usage-stats")
        worker = (f"{ray} start --address=127.0.0.1:{self.port} --node-ip-address=127.0.0.1 "
                  f"--num-cpus=1 --temp-dir={self.tmp}")
        try:
            for (name, extra), cmd in zip(node_env.items(), (head, worker)):
                subprocess.run(["unshare", "-u", "sh", "-c", f"hostname {name} && {cmd}"],
                               env=dict(self.env, **extra), check=True, capture_output=True,
                               timeout=180)
        except BaseException:
            self.stop()
            raise

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        import os
        import signal

        import psutil

        for p in psutil.process_iter(["cmdline"]):
            if any(self.tmp in a for a in p.info["cmdline"] or []):
                for q in [p, *p.children(recursive=True)]:
                    try:
                        os.kill(q.pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
        shutil.rmtree(self.tmp, ignore_errors=True)
