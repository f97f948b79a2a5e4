"""Real mounts for the filesystem probes: tmpfs inside the test's own dir, always unmounted.

Tests run as root (here and in CI). Every mount made here lives under the
test's tmp dir and is unmounted (lazily if busy) by the context manager that
made it; nothing else on the machine is touched.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Iterator


def _run(*argv: str) -> None:
    subprocess.run(list(argv), check=True, capture_output=True, text=True, timeout=30)


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "16m", inodes: str = "") -> Iterator[Path]:
    """A real tmpfs of ``size`` (and ``nr_inodes``) mounted at ``path`` for the block."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (f",nr_inodes={inodes}" if inodes else "")
    _run("mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path))
    try:
        yield path
    finally:
        r = subprocess.run(["umount", str(path)], capture_output=True, timeout=30)
        if r.returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def remount(path: Path, opts: str) -> None:
    _run("mount", "-o", f"remount,{opts}", str(path))


def fill(path: Path, leave_bytes: int = 0) -> None:
    """Write a file until the filesystem at ``path`` has only ``leave_bytes`` left."""
    import os

    st = os.statvfs(path)
    n = st.f_bavail * st.f_frsize - leave_bytes
    with open(path / "filler", "wb") as f:
        chunk = b"\0" * (1 << 20)
        while n > 0:
            try:
                n -= f.write(chunk[: min(len(chunk), n)])
            except OSError:
                break


SFTP_SERVER = "/usr/lib/openssh/sftp-server"


def ensure_sshfs() -> str:
    """sshfs and OpenSSH's sftp-server, installed from Debian if missing; '' or why not.

    CI starts from a bare machine: the packages come from the distribution's own
    archive (apt-get update first when the lists are empty), under apt's lock.
    """
    import os
    import shutil

    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse on this machine: FUSE mounts (sshfs) cannot exist here"
    if shutil.which("sshfs") and Path(SFTP_SERVER).exists():
        return ""
    if not shutil.which("apt-get"):
        return "no sshfs and no apt-get to install it"
    base = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "-y", "-qq"]
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    r = subprocess.run(base + ["install", "sshfs", "openssh-sftp-server"], env=env,
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=300", "update", "-qq"], env=env,
                       capture_output=True, text=True, timeout=600)
        r = subprocess.run(base + ["install", "sshfs", "openssh-sftp-server"], env=env,
                           capture_output=True, text=True, timeout=600)
    if r.returncode != 0 or not shutil.which("sshfs"):
        return "apt-get could not install sshfs: " + (r.stderr.strip().splitlines() or ["?"])[-1]
    return ""


@contextlib.contextmanager
def sshfs_loopback(served: Path, mnt: Path, procs) -> Iterator[Path]:
    """A real FUSE network filesystem: sshfs talking SFTP to a local sftp-server over a pipe.

    There is no sshd: ``ssh_command`` is a two-line script that execs OpenSSH's
    sftp-server, so the wire protocol and the FUSE mount are real; only the
    network hop is a pipe. sshfs runs in the foreground under ``procs``.
    """
    import time

    served.mkdir(parents=True, exist_ok=True)
    mnt.mkdir(parents=True, exist_ok=True)
    fake_ssh = served.parent / "ssh-to-sftp-server"
    # written beside and renamed in: a second mount of the same dir must not rewrite the
    # script while the first sshfs execs it (ETXTBSY)
    tmp = fake_ssh.with_name(f".{fake_ssh.name}.{mnt.name}")
    tmp.write_text(f"#!/bin/sh\nexec {SFTP_SERVER}\n")
    tmp.chmod(0o755)
    os.replace(tmp, fake_ssh)
    procs.start(["sshfs", "-f", "-o", f"ssh_command={fake_ssh}", f"localhost:{served}", str(mnt)])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if f" {mnt} " in Path("/proc/self/mountinfo").read_text():
            break
        time.sleep(0.05)
    else:
        raise AssertionError("sshfs did not mount within 20 s")
    try:
        yield mnt
    finally:
        r = subprocess.run(["umount", str(mnt)], capture_output=True, timeout=30)
        if r.returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)
