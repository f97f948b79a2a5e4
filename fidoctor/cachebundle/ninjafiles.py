"""ninja's own state files, read and written as ninja does: ``.ninja_log`` and ``.ninja_deps``.

What ninja keys on (src/graph.cc, ``RecomputeOutputDirty``): an output is
dirty when it is missing, older than its newest input, has no ``.ninja_log``
entry, the entry's command hash differs from the hash of the command ninja
would run now, or the entry's recorded mtime is older than the newest input;
a ``deps = gcc`` edge is also dirty when ``.ninja_deps`` has no record for its
output or the record's mtime is older than the output. Import rewrites these
two files for the target's paths, so the formats are written here exactly:

* ``.ninja_log``: ``# ninja log vN`` then ``start\\tend\\tmtime_ns\\toutput\\thash_hex``.
  v5 (ninja ≤ 1.11) and v6 (1.12) hash commands with MurmurHash64A (seed
  0xDECAFBADDECAFBAD); v7 (1.13+) with rapidhash (src/third_party/rapidhash).
  A ninja reading another version's log discards it ("starting over").
* ``.ninja_deps`` v4 (ninja 1.10+): ``# ninjadeps\\n`` + int32 4, then records
  ``uint32 size`` (high bit set: a deps record) — a path record is the path,
  NUL-padded to 4 bytes, plus ``~id``; a deps record is ``out_id, mtime_lo,
  mtime_hi, dep_ids…``.
"""

from __future__ import annotations

import re
import struct
from typing import Dict, List, Optional, Tuple

M64 = (1 << 64) - 1
LOG_HEADER = "# ninja log v{}\n"
DEPS_SIGNATURE = b"# ninjadeps\n"
DEPS_VERSION = 4
MAX_RECORD = (1 << 19) - 1


# ---- command hashes -------------------------------------------------------------------------

def murmur64a(data: bytes) -> int:
    """ninja ≤ 1.12's ``MurmurHash64A`` (build_log.cc)."""
    m, r = 0xC6A4A7935BD1E995, 47
    n = len(data)
    h = (0xDECAFBADDECAFBAD ^ (n * m)) & M64
    end = n - n % 8
    for i in range(0, end, 8):
        k = int.from_bytes(data[i:i + 8], "little")
        k = (k * m) & M64
        k ^= k >> r
        k = (k * m) & M64
        h ^= k
        h = (h * m) & M64
    tail = data[end:]
    if tail:
        for i in range(len(tail) - 1, -1, -1):
            h ^= tail[i] << (8 * i)
        h = (h * m) & M64
    h ^= h >> r
    h = (h * m) & M64
    h ^= h >> r
    return h


_SECRET = (0x2D358DCCAA6C78A5, 0x8BB84B93962EACC9, 0x4B33A62ED433D4A3)
_RAPID_SEED = 0xBDD89AA982704029


def _mum(a: int, b: int) -> Tuple[int, int]:
    r = a * b
    return r & M64, (r >> 64) & M64


def _mix(a: int, b: int) -> int:
    lo, hi = _mum(a, b)
    return lo ^ hi


def _r64(p: bytes, i: int) -> int:
    return int.from_bytes(p[i:i + 8], "little")


def _r32(p: bytes, i: int) -> int:
    return int.from_bytes(p[i:i + 4], "little")


def rapidhash(p: bytes, seed: int = _RAPID_SEED) -> int:
    """ninja 1.13's ``rapidhash`` (RAPIDHASH_FAST, RAPIDHASH_UNROLLED, little endian)."""
    s = _SECRET
    n = len(p)
    seed ^= _mix(seed ^ s[0], s[1]) ^ n
    seed &= M64
    if n <= 16:
        if n >= 4:
            plast = n - 4
            a = ((_r32(p, 0) << 32) | _r32(p, plast)) & M64
            delta = (n & 24) >> (n >> 3)
            b = ((_r32(p, delta) << 32) | _r32(p, plast - delta)) & M64
        elif n > 0:
            a = (p[0] << 56) | (p[n >> 1] << 32) | p[n - 1]
            b = 0
        else:
            a = b = 0
    else:
        i, off = n, 0
        if i > 48:
            see1 = see2 = seed
            while i >= 96:
                seed = _mix(_r64(p, off) ^ s[0], _r64(p, off + 8) ^ seed)
                see1 = _mix(_r64(p, off + 16) ^ s[1], _r64(p, off + 24) ^ see1)
                see2 = _mix(_r64(p, off + 32) ^ s[2], _r64(p, off + 40) ^ see2)
                seed = _mix(_r64(p, off + 48) ^ s[0], _r64(p, off + 56) ^ seed)
                see1 = _mix(_r64(p, off + 64) ^ s[1], _r64(p, off + 72) ^ see1)
                see2 = _mix(_r64(p, off + 80) ^ s[2], _r64(p, off + 88) ^ see2)
                off += 96
                i -= 96
            if i >= 48:
                seed = _mix(_r64(p, off) ^ s[0], _r64(p, off + 8) ^ seed)
                see1 = _mix(_r64(p, off + 16) ^ s[1], _r64(p, off + 24) ^ see1)
                see2 = _mix(_r64(p, off + 32) ^ s[2], _r64(p, off + 40) ^ see2)
                off += 48
                i -= 48
            seed ^= see1 ^ see2
        if i > 16:
            seed = _mix(_r64(p, off) ^ s[2], _r64(p, off + 8) ^ seed ^ s[1])
            if i > 32:
                seed = _mix(_r64(p, off + 16) ^ s[2], _r64(p, off + 24) ^ seed)
        a = _r64(p, off + i - 16)
        b = _r64(p, off + i - 8)
    a ^= s[1]
    b ^= seed
    a, b = _mum(a, b)
    return _mix(a ^ s[0] ^ n, b ^ s[1])


def log_version_for(ninja_version: Tuple[int, ...]) -> int:
    """The ``.ninja_log`` version a ninja writes (and the only one it keeps)."""
    if ninja_version[:2] < (1, 12):
        return 5
    if ninja_version[:2] < (1, 13):
        return 6
    return 7


def hash_command(command: str, log_version: int) -> int:
    data = command.encode("utf-8", "surrogateescape")
    return rapidhash(data) if log_version >= 7 else murmur64a(data)


def parse_ninja_version(text: str) -> Optional[Tuple[int, ...]]:
    m = re.match(r"\s*(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    return tuple(int(x) for x in m.groups() if x is not None) if m else None


# ---- .ninja_log -----------------------------------------------------------------------------

def read_log(data: bytes) -> Tuple[Optional[int], Dict[str, Dict[str, int]]]:
    """(version, {output: {start, end, mtime, hash}}); later lines win, as in ninja."""
    lines = data.split(b"\n")
    m = re.match(rb"# ninja log v(\d+)$", lines[0]) if lines else None
    version = int(m.group(1)) if m else None
    out: Dict[str, Dict[str, int]] = {}
    for line in lines[1:]:
        f = line.split(b"\t")
        if len(f) != 5:
            continue
        try:
            out[f[3].decode("utf-8", "surrogateescape")] = {
                "start": int(f[0]), "end": int(f[1]), "mtime": int(f[2]),
                "hash": int(f[4], 16)}
        except ValueError:
            continue
    return version, out


def write_log(version: int, entries: List[Tuple[int, int, int, str, int]]) -> bytes:
    """``entries``: (start_ms, end_ms, mtime_ns, output, command_hash)."""
    body = "".join(f"{s}\t{e}\t{mt}\t{o}\t{h:x}\n" for s, e, mt, o, h in entries)
    return (LOG_HEADER.format(version) + body).encode("utf-8", "surrogateescape")


# ---- .ninja_deps ----------------------------------------------------------------------------

class DepsError(ValueError):
    pass


def read_deps(data: bytes) -> Dict[str, Tuple[int, List[str]]]:
    """{output: (mtime_ns, [deps…])} from a v4 ``.ninja_deps``; later records win."""
    if data[:len(DEPS_SIGNATURE)] != DEPS_SIGNATURE:
        raise DepsError("not a .ninja_deps file (bad signature)")
    off = len(DEPS_SIGNATURE)
    if len(data) < off + 4:
        raise DepsError("truncated header")
    (version,) = struct.unpack_from("<i", data, off)
    if version != DEPS_VERSION:
        raise DepsError(f".ninja_deps version {version} (only {DEPS_VERSION} is read)")
    off += 4
    nodes: List[str] = []
    deps: Dict[int, Tuple[int, List[int]]] = {}
    while off + 4 <= len(data):
        (size,) = struct.unpack_from("<I", data, off)
        is_deps, size = bool(size >> 31), size & 0x7FFFFFFF
        off += 4
        if size > MAX_RECORD or off + size > len(data):
            break  # a torn last record: ninja truncates it too
        rec = data[off:off + size]
        off += size
        if is_deps:
            if size % 4 or size < 12:
                raise DepsError("malformed deps record")
            ints = struct.unpack(f"<i{size // 4 - 1}I", rec)
            out_id, lo, hi, ids = ints[0], ints[1], ints[2], list(ints[3:])
            if any(i >= len(nodes) for i in ids) or out_id >= len(nodes):
                raise DepsError("deps record names an unknown node")
            deps[out_id] = ((hi << 32) | lo, ids)
        else:
            path = rec[:-4].rstrip(b"\0")
            (check,) = struct.unpack_from("<I", rec, size - 4)
            if (~check & 0xFFFFFFFF) != len(nodes):
                raise DepsError("path record out of order (concurrent writers?)")
            nodes.append(path.decode("utf-8", "surrogateescape"))
    return {nodes[o]: (mt, [nodes[i] for i in ids]) for o, (mt, ids) in deps.items()}


def write_deps(records: List[Tuple[str, int, List[str]]]) -> bytes:
    """``records``: (output, mtime_ns, deps) → a v4 ``.ninja_deps``."""
    out = bytearray(DEPS_SIGNATURE + struct.pack("<i", DEPS_VERSION))
    ids: Dict[str, int] = {}

    def node(path: str) -> int:
        if path in ids:
            return ids[path]
        raw = path.encode("utf-8", "surrogateescape")
        pad = (4 - len(raw) % 4) % 4
        size = len(raw) + pad + 4
        if size > MAX_RECORD:
            raise DepsError(f"path too long for .ninja_deps: {path[:80]}")
        ids[path] = len(ids)
        out.extend(struct.pack("<I", size) + raw + b"\0" * pad
                   + struct.pack("<I", ~ids[path] & 0xFFFFFFFF))
        return ids[path]

    for output, mtime, dep_paths in records:
        oid = node(output)
        dids = [node(d) for d in dep_paths]
        size = 4 * (3 + len(dids))
        if size > MAX_RECORD:
            raise DepsError(f"too many deps for {output}")
        out.extend(struct.pack("<IiII", size | 0x80000000, oid, mtime & 0xFFFFFFFF,
                               (mtime >> 32) & 0xFFFFFFFF))
        out.extend(struct.pack(f"<{len(dids)}i", *dids))
    return bytes(out)
