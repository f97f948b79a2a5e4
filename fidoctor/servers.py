"""``--pid auto``: find the serving process this machine runs, and say why it was chosen.

A serving process is a live process that maps libtorch or a FlashInfer module
(``/proc/PID/maps``), runs ``sglang.launch_server`` / vLLM (argv, or the
``setproctitle`` names they give their workers), or is the nearest Python
ancestor of a FlashInfer build (ninja or a compiler working in a
``cached_ops/<module>`` dir). With several, the one whose cache is in trouble
wins: a build running below it first, then incomplete modules (a
``build.ninja`` and no ``.so``) in its FlashInfer cache; then the more
FlashInfer-ish (module mapped > server argv > libtorch mapped), then the
oldest. Everything is read from /proc, each process at most once; fidoctor
itself and its ancestors are never candidates, nor processes in another mount
namespace (a container: its paths are not ours).

``pick_serving()`` is the one entry point: ``diagnose``, ``fix``, ``report``,
``snapshot`` and any later command (``watch --pid auto``) call it.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Set, Tuple

from fidoctor.errors import FidoctorError
from fidoctor.flashinfer.builds import COMPILERS, MARKER, module_dir_of
from fidoctor.procfs import mapped_files, parse_argv, parse_environ, read_proc, read_stat
from fidoctor.proctree import is_python_exe, scan_table
from fidoctor.snapshot.interpreter import same_mount_ns

_SERVER_ARGV = re.compile(r"(sglang\.launch_server|sglang\.srt\.|vllm\.entrypoints|"
                          r"(?:^|[/\s])vllm\s+serve\b)")
_SERVER_TITLE = re.compile(r"^(VLLM::|sglang::|sglang-|vllm-)", re.I)
MAX_MODULE_DIRS = 2000  # per cache, when counting incomplete modules


@dataclass
class Candidate:
    pid: int
    name: str
    cmdline: str
    reasons: List[str] = field(default_factory=list)
    build_below: int = 0          # FlashInfer build processes whose nearest Python is this one
    incomplete: int = 0           # modules with build.ninja and no .so in its cache
    maps_flashinfer: bool = False
    server_argv: bool = False
    maps_torch: bool = False
    start: float = 0.0
    flashinfer_root: str = ""

    def rank(self) -> Tuple:
        return (self.build_below > 0, self.incomplete, self.maps_flashinfer, self.server_argv,
                self.maps_torch, -self.start)

    def line(self) -> str:
        return f"{self.pid} ({self.cmdline[:80] or self.name}): " + "; ".join(self.reasons)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass
class Choice:
    chosen: Candidate
    others: List[Candidate]

    def why(self) -> str:
        """One paragraph for stderr: which process, why, and the rest."""
        text = f"--pid auto chose {self.chosen.line()}"
        if self.others:
            text += "; also seen: " + " | ".join(o.line() for o in self.others[:5])
            if len(self.others) > 5:
                text += f" | … {len(self.others) - 5} more"
        return text

    def to_dict(self) -> Dict[str, Any]:
        return {"chosen": self.chosen.pid, "why": self.chosen.reasons,
                "others": [{"pid": o.pid, "why": o.reasons} for o in self.others]}


def _cmdline(pid: int) -> List[str]:
    return parse_argv(read_proc(pid, "cmdline", 1 << 16) or b"")


def _maps(pid: int) -> Tuple[bool, Optional[str]]:
    """(maps libtorch, a FlashInfer module's path or None)."""
    torch, fi = False, None
    maps = (read_proc(pid, "maps", -1) or b"").decode("utf-8", "replace")
    for path in mapped_files(maps, deleted=False):
        if not path.endswith(".so"):
            continue
        if os.path.basename(path).startswith("libtorch"):
            torch = True
        elif fi is None and (MARKER in path or "/flashinfer" in path):
            fi = path
    return torch, fi


def _environ_root(pid: int) -> str:
    env = parse_environ(read_proc(pid, "environ") or b"")
    from fidoctor.flashinfer.layout import process_cache_root

    return process_cache_root(pid, env) if env else ""


def incomplete_modules(root: str, limit: int = MAX_MODULE_DIRS) -> int:
    """Module dirs under ``root`` with a build.ninja and no .so (bounded walk)."""
    n, seen = 0, 0
    for dirpath, dirnames, _files in os.walk(root):
        if os.path.basename(dirpath) == "cached_ops":
            for d in dirnames:
                seen += 1
                if seen > limit:
                    return n
                try:
                    names = os.listdir(os.path.join(dirpath, d))
                except OSError:
                    continue
                if "build.ninja" in names and not any(x.endswith(".so") for x in names):
                    n += 1
            dirnames[:] = []
        elif dirpath.count(os.sep) - root.count(os.sep) >= 3:
            dirnames[:] = []
    return n


def _excluded(table: Dict[int, Tuple[str, int, int]]) -> Set[int]:
    """fidoctor itself and its ancestors (the shell, a wrapper script) are never the server."""
    me = os.getpid()
    out = {me}
    p = me
    while p in table and p > 1:
        p = table[p][1]
        out.add(p)
    return out


def _python_above(pid: int, table: Dict[int, Tuple[str, int, int]]) -> Optional[int]:
    p = table.get(pid, ("", 0, 0))[1]
    for _ in range(64):
        if p <= 1 or p not in table:
            return None
        try:
            exe = os.readlink(f"/proc/{p}/exe")
        except OSError:
            exe = None
        if is_python_exe(exe, table[p][0]):
            return p
        p = table[p][1]
    return None


def find_serving() -> List[Candidate]:
    """Every serving-process candidate on this machine, best first."""
    table = scan_table()
    skip = _excluded(table)
    builds: Dict[int, List[str]] = {}
    for pid, (comm, _, _) in table.items():
        if pid in skip or comm not in COMPILERS:
            continue
        try:
            cwd: Optional[str] = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            cwd = None
        mod = module_dir_of(_cmdline(pid), cwd)
        if mod:
            above = _python_above(pid, table)
            if above is not None and above not in skip:
                builds.setdefault(above, []).append(os.path.basename(mod.rstrip("/"))[:60])
    out: List[Candidate] = []
    for pid, (comm, _, _) in table.items():
        if pid in skip:
            continue
        argv = _cmdline(pid)
        try:
            exe: Optional[str] = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            exe = None
        joined = " ".join(argv)
        server = bool(_SERVER_ARGV.search(joined) or _SERVER_TITLE.match(joined or comm))
        if not (server or pid in builds or is_python_exe(exe, comm)):
            continue
        if same_mount_ns(pid) is False:
            continue  # a container's process: its paths are not ours (run fidoctor inside it)
        torch, fi = _maps(pid)
        if not (server or pid in builds or torch or fi):
            continue
        c = Candidate(pid=pid, name=comm, cmdline=joined, server_argv=server, maps_torch=torch,
                      maps_flashinfer=fi is not None, build_below=len(builds.get(pid, [])))
        if pid in builds:
            mods = sorted(set(builds[pid]))
            c.reasons.append(f"FlashInfer build below it ({mods[0]}"
                             + (f" and {len(mods) - 1} more" if len(mods) > 1 else "") + ")")
        if server:
            m = _SERVER_ARGV.search(joined) or _SERVER_TITLE.match(joined or comm)
            c.reasons.append(f"runs a server ({m.group(1).strip() if m else comm})")
        if fi:
            c.reasons.append(f"maps FlashInfer module {os.path.basename(fi)}")
        if torch:
            c.reasons.append("maps libtorch")
        c.flashinfer_root = _environ_root(pid)
        if c.flashinfer_root and os.path.isdir(c.flashinfer_root):
            c.incomplete = incomplete_modules(c.flashinfer_root)
            if c.incomplete:
                c.reasons.append(f"{c.incomplete} incomplete module(s) in {c.flashinfer_root}")
        st = read_stat(pid)
        c.start = float(st["starttime"]) if st else 0.0
        out.append(c)
    out.sort(key=lambda c: c.rank(), reverse=True)
    return out


def pick_serving(found: Optional[List[Candidate]] = None) -> Choice:
    """The serving process ``--pid auto`` means; FidoctorError (exit 2) when there is none.

    ``found``: candidates already listed (default: ``find_serving()`` now)."""
    found = find_serving() if found is None else found
    if not found:
        raise FidoctorError(
            "--pid auto: no serving process found (no live process maps libtorch or a "
            "FlashInfer module, runs sglang/vLLM, or has a FlashInfer build below it)",
            "start the server first, or name its interpreter: --python /path/to/venv/bin/python",
        )
    return Choice(found[0], found[1:])
