"""Does this library define these symbols? Asked the way the dynamic loader asks.

libtorch_cpu.so is 400+ MB with ~75,000 dynamic symbols and a 5 MB string
table; listing its exports (``fidoctor.elf.read_facts``) to answer "does it
define these 30 names" would read and decode all of them. The loader instead
hashes each name and probes ``.gnu.hash`` (bloom filter, bucket, chain), then
compares one string: a few small ``pread``s per name, whatever the library's
size. Libraries without ``.gnu.hash`` fall back to a linear ``.dynsym`` scan.
Only defined (``st_shndx != 0``), non-local symbols count.
"""

from __future__ import annotations

import os
import struct
from typing import Dict, Iterable, List, Set, Tuple

from fidoctor.elf import ElfError, _open

SHT_DYNSYM, SHT_GNU_HASH = 11, 0x6FFFFFF6


def gnu_hash(name: bytes) -> int:
    h = 5381
    for c in name:
        h = (h * 33 + c) & 0xFFFFFFFF
    return h


class _Lib:
    def __init__(self, fd: int, size: int) -> None:
        self.fd, self.size = fd, size
        head = os.pread(fd, 64, 0)
        if head[:4] != b"\x7fELF" or len(head) < 64 or head[4] != 2:
            raise ElfError("not a 64-bit ELF file")
        self.bo = "<" if head[5] == 1 else ">"
        shoff, = struct.unpack_from(self.bo + "Q", head, 40)
        shentsize, shnum = struct.unpack_from(self.bo + "HH", head, 58)
        if shoff == 0 or shnum == 0 or shoff + shentsize * shnum > size or shentsize != 64:
            raise ElfError("no usable section header table")
        table = os.pread(fd, shentsize * shnum, shoff)
        self.sh = [struct.unpack_from(self.bo + "IIQQQQIIQQ", table, i * 64) for i in range(shnum)]
        dyn = [i for i, s in enumerate(self.sh) if s[1] == SHT_DYNSYM]
        if not dyn:
            raise ElfError("no .dynsym")
        self.dynsym = self.sh[dyn[0]]
        self.dynstr = self.sh[self.dynsym[6]]
        gh = [s for s in self.sh if s[1] == SHT_GNU_HASH]
        self.gnu = gh[0] if gh else None

    def read(self, off: int, n: int) -> bytes:
        if off < 0 or off + n > self.size:
            raise ElfError("truncated ELF (read past the end)")
        return os.pread(self.fd, n, off)

    def sym(self, idx: int) -> Tuple[int, int, int]:
        """(name offset, info, shndx) of dynsym entry ``idx``."""
        name, info, _, shndx = struct.unpack(self.bo + "IBBH",
                                             self.read(self.dynsym[4] + idx * 24, 8))
        return name, info, shndx

    def name_is(self, off: int, want: bytes) -> bool:
        return self.read(self.dynstr[4] + off, len(want) + 1) == want + b"\0"

    def defines(self, names: Iterable[bytes]) -> Set[bytes]:
        names = list(names)
        if self.gnu is None:
            return self._scan(set(names))
        off = self.gnu[4]
        nbuckets, symoffset, bloom_size, shift = struct.unpack(self.bo + "IIII", self.read(off, 16))
        bloom = self.read(off + 16, 8 * bloom_size)
        buckets_off = off + 16 + 8 * bloom_size
        chain_off = buckets_off + 4 * nbuckets
        found: Set[bytes] = set()
        for n in names:
            h = gnu_hash(n)
            word, = struct.unpack_from(self.bo + "Q", bloom, 8 * ((h // 64) % bloom_size))
            mask = (1 << (h % 64)) | (1 << ((h >> shift) % 64))
            if word & mask != mask:
                continue
            idx, = struct.unpack(self.bo + "I", self.read(buckets_off + 4 * (h % nbuckets), 4))
            if idx < symoffset:
                continue
            for _ in range(1 << 20):
                ch, = struct.unpack(self.bo + "I", self.read(chain_off + 4 * (idx - symoffset), 4))
                if (h | 1) == (ch | 1):
                    noff, info, shndx = self.sym(idx)
                    if self.name_is(noff, n):
                        if shndx != 0 and info >> 4 != 0:
                            found.add(n)
                        break
                if ch & 1:
                    break
                idx += 1
        return found

    def _scan(self, want: Set[bytes]) -> Set[bytes]:
        syms = self.read(self.dynsym[4], self.dynsym[5])
        strtab = self.read(self.dynstr[4], self.dynstr[5])
        found: Set[bytes] = set()
        for i in range(1, len(syms) // 24):
            noff, info, _, shndx = struct.unpack_from(self.bo + "IBBH", syms, i * 24)
            end = strtab.find(b"\0", noff)
            if shndx and info >> 4 and strtab[noff:end] in want:
                found.add(strtab[noff:end])
        return found


def defined(path: str, names: List[str]) -> Dict[str, bool]:
    """{name: defined by ``path``} for each name; raises ElfError with a one-line reason."""
    with _open(path) as f:
        size = os.fstat(f.fileno()).st_size
        try:
            got = _Lib(f.fileno(), size).defines(n.encode() for n in names)
        except (struct.error, IndexError, OverflowError, ValueError) as e:
            raise ElfError(f"garbage ELF ({type(e).__name__}: {e})") from None
    return {n: n.encode() in got for n in names}
