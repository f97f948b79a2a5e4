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


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


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

    def node(self, name: str, env: Dict[str, str], force: Optional[str] = None) -> int:
        port = free_port()
        cfg = self.tmp / f"sshd_{name}.conf"
        setenv = " ".join(f'"{k}={v}"' for k, v in env.items())
        cfg.write_text("\n".join([
            f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {self.hostkey}",
            f"AuthorizedKeysFile {self.tmp / 'authorized_keys'}", "StrictModes no",
            "UsePAM no", "PermitRootLogin prohibit-password", "PasswordAuthentication no",
            f"PidFile {self.tmp / f'sshd_{name}.pid'}", f"SetEnv {setenv}" if env else "",
            f"ForceCommand {force}" if force else "", ""]))
        self.procs.start(["unshare", "-u", "sh", "-c",
                          f"hostname {name} && exec /usr/sbin/sshd -D -e -f {cfg}"])
        wait_port(port)
        self.lines.append(f"127.0.0.1:{port}")
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
