"""ELF facts for the loader questions fidoctor asks: who needs what, from where.

For a shared object we record NEEDED, SONAME, RPATH/RUNPATH, the undefined
dynamic symbols we care about with their version requirement (from
``.gnu.version_r``) and the exported ones with their version (``.gnu.version_d``).
Only the dynamic sections are read, never code or debug info.

Two readers give the same facts:
- ``_read_fast``: a struct-based reader of the section headers and the four
  dynamic sections. pyelftools costs ~6 ms per small module (its construct
  parsing of every header), so 1,000 cached modules would take ~6 s; this
  reader takes a fraction of a millisecond (bench/bench_elf.py).
- ``_read_pyelftools``: the reference, used when the fast reader meets
  something it does not handle (extended section numbering, no section
  headers) and by the tests, which check both agree on real libraries.

Facts are cached on disk keyed by (path, size, mtime, inode, device), so a
warm run re-reads nothing. A corrupt cache file is ignored, never fatal.
"""

from __future__ import annotations

import errno
import json
import os
import struct
from typing import Any, Dict, List, Optional, Tuple

from fidoctor.fsutil import open_regular
from fidoctor.jsoncache import load_file, save_entries
from fidoctor.paths import cache_dir

FACTS_VERSION = 1
CUDA_PREFIXES = (b"cuda", b"__cuda")
DT_NEEDED, DT_SONAME, DT_RPATH, DT_RUNPATH = 1, 14, 15, 29
SHT_DYNAMIC, SHT_DYNSYM = 6, 11
SHT_VERSYM, SHT_VERNEED, SHT_VERDEF = 0x6FFFFFFF, 0x6FFFFFFE, 0x6FFFFFFD
VER_FLG_BASE = 1
MAX_SECTION = 64 << 20  # a dynamic section bigger than this is garbage, not a library


class ElfError(Exception):
    """Why a file's ELF facts cannot be read, in one line."""


class _Fallback(Exception):
    """The fast reader met a layout it leaves to pyelftools."""


def _cstr(buf: bytes, off: int) -> str:
    end = buf.find(b"\0", off)
    if off >= len(buf) or off < 0:
        return ""
    return buf[off: end if end >= 0 else len(buf)].decode("utf-8", "replace")


def _wanted(strtab: bytes, off: int, prefixes: Tuple[bytes, ...]) -> bool:
    return bool(prefixes) and strtab.startswith(prefixes, off)


def _open(path: str):
    try:
        return open_regular(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ElfError("symlink loop") from None
        if e.errno == errno.ENOENT:
            raise ElfError("no such file (or a dangling symlink)") from None
        if e.errno in (errno.EACCES, errno.EPERM):
            raise ElfError("permission denied") from None
        raise ElfError(e.strerror or str(e)) from None


class _Reader:
    """Reads by offset with one pread for the file's head (where .dynsym/.dynstr live).

    Seeking a buffered file throws its buffer away; on small modules that
    made reads 40% of the cost. One 64 KiB pread covers most of them.
    """

    HEAD = 1 << 16

    def __init__(self, fd: int, size: int) -> None:
        self.fd, self.size = fd, size
        self.head = os.pread(fd, min(size, self.HEAD), 0)

    def read(self, off: int, n: int) -> bytes:
        if off + n <= len(self.head):
            return self.head[off:off + n]
        return os.pread(self.fd, n, off)


def _read_fast(f: _Reader, size: int, prefixes: Tuple[bytes, ...]) -> Dict[str, Any]:
    head = f.read(0, 64)
    if len(head) == 0:
        raise ElfError("empty file")
    if head[:4] != b"\x7fELF":
        raise ElfError(f"not ELF (starts with {head[:8]!r})")
    if len(head) < 52 or head[4] not in (1, 2) or head[5] not in (1, 2):
        raise ElfError("truncated or garbage ELF header")
    is64 = head[4] == 2
    bo = "<" if head[5] == 1 else ">"
    if is64:
        if len(head) < 64:
            raise ElfError("truncated ELF header")
        e_type, e_machine = struct.unpack_from(bo + "HH", head, 16)
        shoff, = struct.unpack_from(bo + "Q", head, 40)
        shentsize, shnum = struct.unpack_from(bo + "HH", head, 58)
        shfmt, symfmt, dynfmt = bo + "IIQQQQIIQQ", bo + "IBBHQQ", bo + "qQ"
    else:
        e_type, e_machine = struct.unpack_from(bo + "HH", head, 16)
        shoff, = struct.unpack_from(bo + "I", head, 32)
        shentsize, shnum = struct.unpack_from(bo + "HH", head, 46)
        shfmt, symfmt, dynfmt = bo + "IIIIIIIIII", bo + "IIIBBH", bo + "iI"
    if shoff == 0 or shnum == 0:
        raise _Fallback()
    if shentsize != struct.calcsize(shfmt):
        raise ElfError(f"garbage ELF header (section header size {shentsize})")
    if shoff + shentsize * shnum > size:
        raise ElfError(f"truncated ELF ({size} bytes, section table ends at "
                       f"{shoff + shentsize * shnum})")
    table = f.read(shoff, shentsize * shnum)
    shdrs = []  # (type, offset, size, link, entsize)
    for i in range(shnum):
        s = struct.unpack_from(shfmt, table, i * shentsize)
        shdrs.append((s[1], s[4], s[5], s[6], s[9]))

    def data(idx: int) -> bytes:
        if not 0 <= idx < len(shdrs):
            raise ElfError(f"garbage ELF (section link {idx} out of range)")
        typ, off, sz, _, _ = shdrs[idx]
        if sz > MAX_SECTION or off + sz > size:
            raise ElfError(f"truncated ELF (section {idx} ends at {off + sz}, file is {size} bytes)")
        return f.read(off, sz)

    by_type: Dict[int, int] = {}
    for i, s in enumerate(shdrs):
        by_type.setdefault(s[0], i)
    facts = _empty_facts(is64, e_type, e_machine)
    if SHT_DYNAMIC in by_type:
        di = by_type[SHT_DYNAMIC]
        link = shdrs[di][3]
        if link >= shnum:
            raise ElfError("garbage .dynamic (bad string table link)")
        strtab = data(link)
        dyn = data(di)
        step = struct.calcsize(dynfmt)
        for tag, val in struct.iter_unpack(dynfmt, dyn[: len(dyn) - len(dyn) % step]):
            if tag == 0:
                break
            if tag == DT_NEEDED:
                facts["needed"].append(_cstr(strtab, val))
            elif tag == DT_SONAME:
                facts["soname"] = _cstr(strtab, val)
            elif tag == DT_RPATH:
                facts["rpath"] = _cstr(strtab, val)
            elif tag == DT_RUNPATH:
                facts["runpath"] = _cstr(strtab, val)
    if SHT_DYNSYM not in by_type or not prefixes:
        return facts  # no symbols asked for: skip the biggest section entirely
    si = by_type[SHT_DYNSYM]
    link = shdrs[si][3]
    if link >= shnum:
        raise ElfError("garbage .dynsym (bad string table link)")
    symstr = data(link)
    syms = data(si)
    versions: Dict[int, Tuple[str, Optional[str]]] = {}
    if SHT_VERNEED in by_type:
        vi = by_type[SHT_VERNEED]
        vstr = symstr if shdrs[vi][3] == link else data(shdrs[vi][3])
        versions.update(_verneed(data(vi), vstr, bo))
    if SHT_VERDEF in by_type:
        vi = by_type[SHT_VERDEF]
        vstr = symstr if shdrs[vi][3] == link else data(shdrs[vi][3])
        versions.update(_verdef(data(vi), vstr, bo))
    versym = data(by_type[SHT_VERSYM]) if SHT_VERSYM in by_type else b""
    step = struct.calcsize(symfmt)
    nsym = len(syms) // step
    for i, s in enumerate(struct.iter_unpack(symfmt, syms[: nsym * step])):
        if i == 0:
            continue
        if is64:
            name_off, info, shndx = s[0], s[1], s[3]
        else:
            name_off, info, shndx = s[0], s[3], s[5]
        if info >> 4 == 0 or not _wanted(symstr, name_off, prefixes):  # STB_LOCAL
            continue
        vs = struct.unpack_from(bo + "H", versym, 2 * i)[0] if 2 * i + 2 <= len(versym) else 1
        _add_symbol(facts, _cstr(symstr, name_off), shndx, vs, versions)
    return facts


def _verneed(buf: bytes, strtab: bytes, bo: str) -> Dict[int, Tuple[str, Optional[str]]]:
    out: Dict[int, Tuple[str, Optional[str]]] = {}
    off, guard = 0, 0
    while off + 16 <= len(buf) and guard < 4096:
        guard += 1
        _, cnt, file_off, aux, nxt = struct.unpack_from(bo + "HHIII", buf, off)
        fname = _cstr(strtab, file_off)
        a = off + aux
        for _ in range(cnt):
            if a + 16 > len(buf):
                break
            _, _, other, name_off, anext = struct.unpack_from(bo + "IHHII", buf, a)
            out[other & 0x7FFF] = (_cstr(strtab, name_off), fname)
            if not anext:
                break
            a += anext
        if not nxt:
            break
        off += nxt
    return out


def _verdef(buf: bytes, strtab: bytes, bo: str) -> Dict[int, Tuple[str, Optional[str]]]:
    out: Dict[int, Tuple[str, Optional[str]]] = {}
    off, guard = 0, 0
    while off + 20 <= len(buf) and guard < 4096:
        guard += 1
        _, flags, ndx, cnt, _, aux, nxt = struct.unpack_from(bo + "HHHHIII", buf, off)
        if cnt and off + aux + 8 <= len(buf) and not flags & VER_FLG_BASE:
            name_off, = struct.unpack_from(bo + "I", buf, off + aux)
            out[ndx & 0x7FFF] = (_cstr(strtab, name_off), None)
        if not nxt:
            break
        off += nxt
    return out


_MACHINES = {3: "EM_386", 20: "EM_PPC", 21: "EM_PPC64", 40: "EM_ARM", 62: "EM_X86_64",
             183: "EM_AARCH64", 243: "EM_RISCV"}


def _empty_facts(is64: bool, e_type: int, machine: Any) -> Dict[str, Any]:
    if isinstance(machine, int):
        machine = _MACHINES.get(machine, f"EM_{machine}")
    return {"class": 64 if is64 else 32, "type": e_type, "machine": machine, "soname": None,
            "needed": [], "rpath": None, "runpath": None, "undefined": [], "exports": {}}


def _add_symbol(facts: Dict[str, Any], name: str, shndx: int, vs: int,
                versions: Dict[int, Tuple[str, Optional[str]]]) -> None:
    ver, vfile = versions.get(vs & 0x7FFF, (None, None))
    if shndx == 0:
        facts["undefined"].append([name, ver, vfile])
    else:
        # "@@" marks the default version (what an unversioned reference binds to).
        tag = None if ver is None else ("@" if vs & 0x8000 else "@@") + ver
        prev = facts["exports"].get(name)
        if prev is None or (tag or "").startswith("@@"):
            facts["exports"][name] = tag


def _read_pyelftools(path: str, prefixes: Tuple[bytes, ...]) -> Dict[str, Any]:
    """The same facts through pyelftools (reference reader; slow per symbol)."""
    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile
    from elftools.elf.gnuversions import (
        GNUVerDefSection,
        GNUVerNeedSection,
        GNUVerSymSection,
    )
    from elftools.elf.sections import SymbolTableSection

    sprefixes = tuple(p.decode() for p in prefixes)
    with _open(path) as f:
        try:
            elf = ELFFile(f)
            facts = _empty_facts(elf.elfclass == 64, _etype(elf.header["e_type"]),
                                 elf.header["e_machine"])
            versions: Dict[int, Tuple[str, Optional[str]]] = {}
            dynsym = versym = None
            for sec in elf.iter_sections():
                if isinstance(sec, DynamicSection):
                    for t in sec.iter_tags():
                        # pyelftools sets these attributes per tag kind at run time
                        if t.entry.d_tag == "DT_NEEDED":
                            facts["needed"].append(getattr(t, "needed"))  # noqa: B009
                        elif t.entry.d_tag == "DT_SONAME":
                            facts["soname"] = getattr(t, "soname")  # noqa: B009
                        elif t.entry.d_tag == "DT_RPATH":
                            facts["rpath"] = getattr(t, "rpath")  # noqa: B009
                        elif t.entry.d_tag == "DT_RUNPATH":
                            facts["runpath"] = getattr(t, "runpath")  # noqa: B009
                elif isinstance(sec, GNUVerNeedSection):
                    for vn, auxs in sec.iter_versions():
                        for a in auxs:
                            versions[a["vna_other"] & 0x7FFF] = (a.name, vn.name)
                elif isinstance(sec, GNUVerDefSection):
                    for vd, auxs in sec.iter_versions():
                        if not vd["vd_flags"] & VER_FLG_BASE:
                            versions[vd["vd_ndx"] & 0x7FFF] = (next(iter(auxs)).name, None)
                elif isinstance(sec, GNUVerSymSection):
                    versym = sec
                elif isinstance(sec, SymbolTableSection) and sec["sh_type"] == "SHT_DYNSYM":
                    dynsym = sec
            if dynsym is not None:
                for i, sym in enumerate(dynsym.iter_symbols()):
                    if i == 0 or sym["st_info"]["bind"] == "STB_LOCAL":
                        continue
                    if not sym.name.startswith(sprefixes):
                        continue
                    vs = versym.get_symbol(i)["ndx"] if versym is not None else 1
                    vs = vs if isinstance(vs, int) else {"VER_NDX_LOCAL": 0,
                                                         "VER_NDX_GLOBAL": 1}.get(vs, 1)
                    shndx = sym["st_shndx"]
                    _add_symbol(facts, sym.name, 0 if shndx == "SHN_UNDEF" else 1, vs, versions)
            return facts
        except Exception as e:  # noqa: BLE001 - pyelftools raises many types on garbage
            raise ElfError(f"unreadable ELF ({type(e).__name__}: {e})") from None


def _etype(t: Any) -> int:
    return {"ET_NONE": 0, "ET_REL": 1, "ET_EXEC": 2, "ET_DYN": 3, "ET_CORE": 4}.get(t, t)


def file_key(path: str) -> Optional[List[int]]:
    """(size, mtime_ns, inode, device) of what ``path`` resolves to, or None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev]


def read_facts(path: str, prefixes: Tuple[bytes, ...] = CUDA_PREFIXES,
               reader: str = "fast") -> Dict[str, Any]:
    """ELF facts of ``path``; raises ElfError with a one-line reason.

    ``undefined`` lists ``[name, version, file]`` and ``exports`` maps name to
    ``@@version``/``@version``/None, both only for symbols whose name starts
    with one of ``prefixes`` (decoding every symbol name is what makes ELF
    readers slow, and the probes only ask about CUDA runtime symbols).
    """
    if reader == "pyelftools":
        return _read_pyelftools(path, prefixes)
    with _open(path) as f:
        size = os.fstat(f.fileno()).st_size
        try:
            return _read_fast(_Reader(f.fileno(), size), size, prefixes)
        except _Fallback:
            pass
        except (struct.error, IndexError, ValueError, OverflowError) as e:
            raise ElfError(f"garbage ELF ({type(e).__name__}: {e})") from None
    return _read_pyelftools(path, prefixes)


def _pack(entries: Dict[str, Any]) -> Dict[str, Any]:
    """The on-disk form: each distinct facts record once in ``table``, and per file
    ``[size, mtime_ns, inode, device, index in table]`` (an entry of another shape is kept
    as it is).

    Why: the modules of one FlashInfer build leave the same few CUDA-runtime symbol sets
    undefined, so 10,000 modules hold a handful of distinct records; stored once, the file
    decodes ≈ 5× faster (bench/bench_big.py), and the records a run shares stay shared
    objects on their way to the parent (marshal sends a shared object once).
    """
    table: List[Dict[str, Any]] = []
    index: Dict[Any, int] = {}
    out: Dict[str, Any] = {}
    for ck, ent in entries.items():
        key, facts = ent.get("key"), ent.get("facts")
        if not isinstance(key, list) or len(key) != 4 or not isinstance(facts, dict):
            out[ck] = ent
            continue
        i = index.get(id(facts))  # records loaded from the table are already shared
        if i is None:
            text = json.dumps(facts, sort_keys=True)
            i = index.get(text)
            if i is None:
                i = index[text] = len(table)
                table.append(facts)
            index[id(facts)] = i
        out[ck] = key + [i]
    return {"table": table, "entries": out}


def _unpack(raw: Dict[str, Any]) -> Tuple[Dict[str, Any], bool]:
    """(``{path + prefixes: {"key", "facts"}}``, whether any entry is in the form before
    the table) from the file; a table reference that is off-shape is dropped (its file is
    read again)."""
    table = raw.get("table")
    table = table if isinstance(table, list) else []
    out: Dict[str, Any] = {}
    old = False
    for ck, v in raw["entries"].items():
        if isinstance(v, list):
            if len(v) == 5 and type(v[4]) is int and 0 <= v[4] < len(table):
                out[ck] = {"key": v[:4], "facts": table[v[4]]}
        else:
            out[ck] = v
            old = old or (isinstance(v, dict) and "facts" in v)
    return out, old


class FactCache:
    """ELF facts on disk, keyed by path and (size, mtime_ns, inode, device).

    Robust by construction: an unreadable, truncated or foreign file is
    treated as empty; saving goes through ``jsoncache`` (``safeio.write_atomic``) so a
    crash or a concurrent fidoctor never leaves half a file. Errors are cached
    too (a truncated module stays truncated until it changes).
    """

    MAX_ENTRIES = 50000

    def __init__(self, path: Optional[str] = None, name: str = "") -> None:
        # One file per reader (``name``): the elf gatherer's 10,000 modules are a 10 MB
        # file that cudart (a few libcudart) and torch_abi would otherwise each load
        # (0.2–0.3 s) and rewrite, the last writer dropping the others' new entries.
        self.path = path or os.path.join(
            cache_dir(), f"elf-facts{'-' + name if name else ''}-v{FACTS_VERSION}.json")
        self.used: set = set()
        self.hits = self.misses = 0
        raw, self.load_error = load_file(self.path, FACTS_VERSION, "cache")
        self.entries: Dict[str, Any] = {}
        self.dirty = False
        if raw is not None:
            self.entries, self.dirty = _unpack(raw)  # the older form is rewritten

    def facts(self, path: str, prefixes: Tuple[bytes, ...] = CUDA_PREFIXES) -> Dict[str, Any]:
        """Facts of ``path`` (or ``{"error": reason}``), from the cache when unchanged."""
        key = file_key(path)
        ck = path + "\0" + ",".join(p.decode() for p in prefixes)
        ent = self.entries.get(ck)
        if key is not None and isinstance(ent, dict) and ent.get("key") == key and isinstance(
            ent.get("facts"), dict
        ):
            self.hits += 1
            self.used.add(ck)
            return ent["facts"]
        self.misses += 1
        try:
            facts: Dict[str, Any] = read_facts(path, prefixes)
        except ElfError as e:
            facts = {"error": str(e)}
        except Exception as e:  # noqa: BLE001 - one odd file must not cost every module's facts
            facts = {"error": f"could not read ({type(e).__name__}: {e}); a fidoctor bug?"}
        if key is not None and key == file_key(path):  # unchanged while we read it
            self.entries[ck] = {"key": key, "facts": facts}
            self.used.add(ck)
            self.dirty = True
        return facts

    def save(self) -> Optional[str]:
        """Write the cache if it changed; returns an error string instead of raising."""
        if not self.dirty:
            return None
        if len(self.entries) > self.MAX_ENTRIES:
            self.entries = {k: v for k, v in self.entries.items() if k in self.used}
        packed = _pack(self.entries)
        err = save_entries(self.path, FACTS_VERSION, packed["entries"], "ELF fact cache",
                           extra={"table": packed["table"]} if packed["table"] else None)
        if err:
            return err
        self.dirty = False
        return None
