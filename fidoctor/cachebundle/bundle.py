"""The bundle file: a tar (optionally zstd), written plainly and read with suspicion.

Reading never uses ``extractall``: every member is checked before a byte of
it lands anywhere — a relative, normalized name under ``ws/`` that the
manifest lists (no absolute paths, no ``..``), a regular file (no symlinks,
hard links, devices or FIFOs), within the size the manifest declares and the
caps below — and its sha256 is computed while it is read. ``iter_files``
yields contents only after the whole member has been read and matched.

zstd: used when a ``zstd`` binary is on PATH (or the ``zstandard`` module is
importable); neither ships with Python < 3.14, so a plain tar is the default
and ``.tar.zst`` is refused with a clear error where neither exists.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import shutil
import subprocess
import tarfile
from typing import IO, Any, Dict, Iterator, Optional, Tuple

from fidoctor import safeio
from fidoctor.errors import FidoctorError

MANIFEST = "manifest.json"
PREFIX = "ws/"
MAX_MANIFEST = 64 << 20
MAX_FILE = 1 << 30  # a member is held in memory while its sha256 is checked
MAX_TOTAL = 32 << 30
MAX_MEMBERS = 200_000
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class BundleError(FidoctorError):
    """The bundle is malformed or does not match its manifest (import refuses it)."""


def zstd_available() -> Optional[str]:
    """'binary', 'module' or None."""
    if shutil.which("zstd"):
        return "binary"
    try:
        import zstandard  # noqa: F401

        return "module"
    except ImportError:
        return None


def wants_zstd(path: str) -> bool:
    return path.endswith((".zst", ".tzst", ".zstd"))


# ---- writing ---------------------------------------------------------------------------------

class Writer:
    """Write ``manifest.json`` then files to ``path`` (tmp name, renamed when complete)."""

    def __init__(self, path: str) -> None:
        safeio.check_writable_target(path, "bundle")
        self.path = path
        self.tmp = f"{path}.partial-{os.getpid()}"
        self.proc: Optional[subprocess.Popen] = None
        self.raw: Optional[IO[bytes]] = None
        if wants_zstd(path):
            how = zstd_available()
            if how is None:
                raise FidoctorError(f"{path}: zstd is not available here (no zstd binary, no "
                                    "zstandard module)", "write a plain .tar instead")
            out = open(self.tmp, "xb")  # noqa: SIM115 - closed in close() or abort()
            if how == "binary":
                self.proc = subprocess.Popen(["zstd", "-q", "-c", "-T0"], stdin=subprocess.PIPE,
                                             stdout=out)
                self._out = out
                self.raw = self.proc.stdin
            else:
                import zstandard

                self._out = out
                self.raw = zstandard.ZstdCompressor().stream_writer(out)
        else:
            self._out = open(self.tmp, "xb")  # noqa: SIM115 - closed in close()
            self.raw = self._out
        self.tar = tarfile.open(fileobj=self.raw, mode="w|",  # noqa: SIM115 - closed in close()
                                format=tarfile.PAX_FORMAT)

    def add_bytes(self, name: str, data: bytes, mode: int = 0o644, mtime: float = 0) -> None:
        ti = tarfile.TarInfo(name)
        ti.size, ti.mode, ti.mtime = len(data), mode, mtime
        self.tar.addfile(ti, io.BytesIO(data))

    def add_file(self, name: str, path: str, mode: int, mtime_ns: int) -> None:
        with open(path, "rb") as f:
            ti = tarfile.TarInfo(name)
            ti.size = os.fstat(f.fileno()).st_size
            ti.mode, ti.mtime = mode, mtime_ns / 1e9
            self.tar.addfile(ti, f)

    def close(self) -> None:
        self.tar.close()
        if self.proc is not None:
            assert self.raw is not None
            self.raw.close()
            if self.proc.wait() != 0:
                raise FidoctorError("zstd failed while writing the bundle")
        elif self.raw is not self._out and self.raw is not None:
            self.raw.close()
        self._out.flush()
        os.fsync(self._out.fileno())
        self._out.close()
        safeio.check_writable_target(self.path, "bundle")  # again, right before the rename
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self.tar.close()
        except (OSError, tarfile.TarError):
            pass
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        try:
            self._out.close()
        except OSError:
            pass
        try:
            os.unlink(self.tmp)
        except OSError:
            pass


# ---- reading ---------------------------------------------------------------------------------

def _open_stream(path: str) -> Tuple[IO[bytes], Optional[subprocess.Popen]]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise FidoctorError(f"{path}: {e.strerror}") from None
    f = os.fdopen(fd, "rb")
    if not os.path.isfile(path) or not _is_regular(f):
        f.close()
        raise FidoctorError(f"{path}: not a regular file")
    head = os.pread(f.fileno(), 4, 0)  # no buffered read: zstd gets the fd at offset 0
    if head != ZSTD_MAGIC:
        return f, None
    how = zstd_available()
    if how == "binary":
        p = subprocess.Popen(["zstd", "-q", "-d", "-c"], stdin=f, stdout=subprocess.PIPE)
        f.close()
        assert p.stdout is not None
        return p.stdout, p
    if how == "module":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(f), None
    f.close()
    raise FidoctorError(f"{path} is zstd-compressed and zstd is not available here",
                        "install zstd (apt-get install zstd) or export a plain .tar")


def _is_regular(f: IO[bytes]) -> bool:
    import stat

    return stat.S_ISREG(os.fstat(f.fileno()).st_mode)


MAX_HEADER = 1 << 20  # a pax or GNU long-name header: names and times, never megabytes


class _Header(tarfile.TarInfo):
    """A member header that refuses an extended header bigger than ``MAX_HEADER``.

    tarfile reads a pax or GNU long-name header into memory whole, before any
    member check can run: a 36 KB ``.tar.zst`` whose first header declares a
    1 GiB pax record made import allocate 2 GB (and a 10 GiB one would take the
    box down). Checked on the declared size, before a byte of it is read.
    """

    def _proc_member(self, tarfile_: Any) -> Any:
        if self.type in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
                         tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK) \
                and self.size > MAX_HEADER:
            raise tarfile.ReadError(f"an extended header of {self.size} bytes (over "
                                    f"{MAX_HEADER >> 20} MiB: not a fidoctor bundle, or a "
                                    "decompression bomb)")
        return super()._proc_member(tarfile_)  # type: ignore[misc]


def _check_name(name: str) -> str:
    if not name or name.startswith("/") or "\\" in name or "\0" in name:
        raise BundleError(f"bundle member {name!r}: absolute or malformed name")
    norm = posixpath.normpath(name)
    if norm != name.rstrip("/") or norm.startswith("../") or norm == ".." or \
            "/../" in f"/{norm}/":
        raise BundleError(f"bundle member {name!r}: not a plain relative path")
    return norm


def read_manifest(path: str) -> Dict[str, Any]:
    """The manifest (the first member), after checking it is what it says."""
    stream, p = _open_stream(path)
    try:
        with tarfile.open(fileobj=stream, mode="r|", tarinfo=_Header) as tar:
            ti = tar.next()
            if ti is None or ti.name != MANIFEST or not ti.isreg():
                raise BundleError(f"{path}: not a fidoctor cache bundle (no {MANIFEST} first)")
            if ti.size > MAX_MANIFEST:
                raise BundleError(f"{path}: manifest larger than {MAX_MANIFEST >> 20} MiB")
            f = tar.extractfile(ti)
            assert f is not None
            raw = f.read(MAX_MANIFEST + 1)
    except tarfile.TarError as e:
        raise BundleError(f"{path}: not a readable tar ({e})") from None
    finally:
        _close(stream, p)
    try:
        doc = safeio.loads_json(raw, f"{path}: manifest")
    except FidoctorError as e:
        raise BundleError(e.message) from None
    if not isinstance(doc, dict):
        raise BundleError(f"{path}: manifest is not an object")
    return doc


def iter_files(path: str, expected: Dict[str, Dict[str, Any]]) -> Iterator[Tuple[str, bytes]]:
    """(workspace-relative path, content) of each member, each checked against ``expected``
    ({rel: {sha256, size}}); raises BundleError on anything unexpected, and at the end if
    a listed file never came."""
    stream, p = _open_stream(path)
    seen = set()
    total = 0
    try:
        with tarfile.open(fileobj=stream, mode="r|", tarinfo=_Header) as tar:
            for n, ti in enumerate(tar):
                if n > MAX_MEMBERS:
                    raise BundleError(f"{path}: more than {MAX_MEMBERS} members")
                name = _check_name(ti.name)
                if name == MANIFEST and n == 0:
                    continue
                if ti.isdir():
                    continue
                if not ti.isreg():
                    raise BundleError(f"bundle member {name}: a link or special file "
                                      "(only regular files are accepted)")
                if not name.startswith(PREFIX):
                    raise BundleError(f"bundle member {name}: not under {PREFIX}")
                rel = name[len(PREFIX):]
                want = expected.get(rel)
                if want is None:
                    raise BundleError(f"bundle member {name}: not listed in the manifest")
                if rel in seen:
                    raise BundleError(f"bundle member {name}: appears twice")
                if ti.size > MAX_FILE or want["size"] > MAX_FILE:
                    raise BundleError(f"bundle member {name}: {max(ti.size, want['size'])} "
                                      f"bytes, more than a bundle member may hold "
                                      f"({MAX_FILE >> 30} GiB); nothing was read")
                if ti.size != want["size"]:
                    raise BundleError(f"bundle member {name}: {ti.size} bytes, the manifest "
                                      f"says {want['size']}")
                total += ti.size
                if total > MAX_TOTAL:
                    raise BundleError(f"{path}: more than {MAX_TOTAL >> 30} GiB of files")
                f = tar.extractfile(ti)
                assert f is not None
                data = f.read(want["size"] + 1)
                if len(data) != want["size"] or hashlib.sha256(data).hexdigest() != \
                        want["sha256"]:
                    raise BundleError(f"bundle member {name}: content differs from the "
                                      "manifest's sha256 (tampered or corrupt)")
                seen.add(rel)
                yield rel, data
    except tarfile.TarError as e:
        raise BundleError(f"{path}: not a readable tar ({e})") from None
    finally:
        _close(stream, p)
    missing = sorted(set(expected) - seen)
    if missing:
        raise BundleError(f"{path}: {len(missing)} file(s) the manifest lists are missing, "
                          f"e.g. {missing[0]}")


def _close(stream: IO[bytes], p: Optional[subprocess.Popen]) -> None:
    try:
        stream.close()
    except OSError:
        pass
    if p is not None:
        p.kill()
        p.wait()


def dumps(manifest: Dict[str, Any]) -> bytes:
    return json.dumps(manifest, indent=1, sort_keys=True).encode()
