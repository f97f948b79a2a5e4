"""A box that leaks: planted user, home, host-like names, addresses and secrets.

The box's workspace base *is* a home directory named after a planted user,
and the environment carries credentials the way real servers do (HF_TOKEN,
an API key, a proxy URL with ``user:pass@``, host IPs). ``PLANTED`` lists every
value that must not survive redaction anywhere.
"""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path
from typing import Dict, Iterable, List

from conftest import DECODE, FA2, FA3, Box, log_line

USER = "qzjdoe7"
HF_TOKEN = "hf_PlantedTokenAbcdefghijklmnop1234567"
API_KEY = "sk-planted-vllm-api-key-0987654321"
PROXY_USER = "proxyqz9"
PROXY_PASS = "Pr0xyS3cretPass"
PROXY_URL = f"http://{PROXY_USER}:{PROXY_PASS}@proxy.corp.example:3128"
IPV4 = "10.23.45.67"
IPV6 = "fe80::1ff:fe23:4567:890a"
MAC = "02:42:ac:11:00:7e"
SHORT_SECRET = "x7Q"  # shorter than MIN_LITERAL_SECRET: hidden where it is, by its key

PLANTED = [USER, HF_TOKEN, API_KEY, PROXY_USER, PROXY_PASS, IPV4, IPV6, MAC]


def leaky_box(box: Box, tmp_path: Path) -> Dict[str, str]:
    """Turn ``box`` into a broken box under a planted home; returns the env to run in.

    Findings planted: a module with a text ``.so`` (cache-incomplete-module,
    error), a module killed mid-build (cache-incomplete-module, warning) whose
    0.7 log line has no ``.so`` (jit-log-unfinished, error), and a good module.
    """
    home = tmp_path / "home" / USER
    home.mkdir(parents=True)
    box.base = home
    box.root = home / ".cache" / "flashinfer"
    ws = box.workspace()
    box.module(ws, DECODE)
    box.module(ws, FA3, so="missing", depfiles=2)
    box.module(ws, FA2, so="text")
    box.log(ws, [log_line("new", "building", DECODE, time.time() - 600),
                 log_line("new", "building", FA3, time.time() - 90)])
    return box.env(
        HOME=str(home), USER=USER, LOGNAME=USER,
        HF_TOKEN=HF_TOKEN,  # not whitelisted: must never even enter the snapshot
        VLLM_API_KEY=API_KEY,
        SGLANG_HTTP_PROXY=PROXY_URL,
        VLLM_HOST_IP=IPV4,
        VLLM_HOST_IPV6=IPV6,
        NVIDIA_HOST_MAC=MAC,
        FLASHINFER_DB_PASSWORD=SHORT_SECRET,
        CUDA_VISIBLE_DEVICES="0,1",
    )


def hostname_tokens(text: str) -> List[str]:
    """Occurrences of this machine's host name as a token (it may be as short as 'vm',
    so a substring search would also hit 'llvm'; redaction works on tokens too)."""
    name = socket.gethostname()
    return re.findall(rf"(?<![A-Za-z0-9]){re.escape(name)}(?![A-Za-z0-9])", text)


def survivors(raw: bytes, extra: Iterable[str] = ()) -> List[str]:
    """Planted values found in ``raw`` file bytes (empty when redaction held)."""
    found = [v for v in [*PLANTED, *extra] if v.encode() in raw]
    found += [f"hostname {t!r}" for t in hostname_tokens(raw.decode("utf-8", "replace"))]
    return found
