"""The bundle's manifest: what was built, with what, and from which exact bytes.

A bundle is a tar (optionally zstd) of ``manifest.json`` first, then the files
it lists under ``ws/`` (paths relative to the builder's workspace). Import
trusts nothing in the tar that the manifest does not name with its sha256 and
size, and nothing in the manifest that does not match the target.

Data contract (``manifest.json``; format ``fidoctor-cache-bundle``, version 1;
add fields, never repurpose them):
  source: the builder's Target facts (target.py): flashinfer_version, arch,
    cuda_home (the string in build.ninja) and cuda_home_real, toolkit_version,
    cuda_runtime, torch_version, torch_cuda, python_version, ninja_version,
    flashinfer_dir, tvm_ffi_dir, site_dir, workspace (realpaths).
  modules: one ModuleManifest each (below).
"""

from __future__ import annotations

import os
import shlex
import stat
from typing import Dict, List, Optional, TypedDict

from fidoctor import safeio
from fidoctor.cachebundle import graph, ninjafiles
from fidoctor.errors import FidoctorError
from fidoctor.txn.safety import sha256_file

FORMAT = "fidoctor-cache-bundle"
FORMAT_VERSION = 1
SKIP_IN_MODULE = (".ninja_log", ".ninja_deps", ".ninja_lock")


class FileEntry(TypedDict):
    path: str        # relative to the workspace, e.g. cached_ops/<m>/<m>.so
    sha256: str
    size: int
    mode: int
    mtime_ns: int


class LogEntry(TypedDict):
    output: str      # absolute, builder's path
    start: int
    end: int
    mtime: int
    hash: str        # hex, in the builder's log version


class ModuleManifest(TypedDict):
    """One ``cached_ops/<name>/`` and everything its objects were compiled from."""

    name: str
    so: str                          # workspace-relative path of the .so
    so_sha256: str
    build_ninja_sha256: str
    gencode: List[str]               # the -gencode flags in build.ninja
    files: List[FileEntry]           # shipped in the bundle
    ninja_log_version: Optional[int]
    ninja_log: List[LogEntry]        # the builder's .ninja_log entries for its outputs
    deps: Dict[str, List[str]]       # output → deps, from .ninja_deps (builder's paths)
    inputs: Dict[str, str]           # every source/header (builder's path) → sha256


class DigestCache:
    """sha256 per path for one run: modules share most headers."""

    def __init__(self) -> None:
        self.seen: Dict[str, Optional[str]] = {}

    def get(self, path: str) -> Optional[str]:
        if path not in self.seen:
            try:
                self.seen[path] = sha256_file(path)
            except (OSError, FidoctorError):
                self.seen[path] = None
        return self.seen[path]


def _read(path: str, limit: int = 256 << 20) -> bytes:
    return safeio.read_bytes(path, limit, follow=False, what="ninja file")


def file_entry(ws: str, path: str, digests: DigestCache) -> FileEntry:
    from fidoctor.cachebundle.bundle import MAX_FILE

    st = os.lstat(path)
    if st.st_size > MAX_FILE:
        # hashing a 1 TB (sparse) file took an hour, then it went into the tar; import
        # refuses any member over MAX_FILE anyway
        raise FidoctorError(f"{path}: {st.st_size} bytes, more than a bundle member may hold "
                            f"({MAX_FILE >> 30} GiB); not shipped",
                            "remove it from the module dir if it is not part of the build")
    sha = digests.get(path)
    if sha is None:
        raise FidoctorError(f"{path}: cannot read it")
    return {"path": os.path.relpath(path, ws), "sha256": sha, "size": st.st_size,
            "mode": stat.S_IMODE(st.st_mode), "mtime_ns": st.st_mtime_ns}


def env_disagreements(text: str, env: Dict[str, str]) -> List[str]:
    """Where ``build.ninja`` shows it was written under another environment than ``env``
    (the export's), for the variables FlashInfer copies into it; the manifest records
    ``env``'s values, so they must be the ones the modules were really built with."""
    from fidoctor.flashinfer.ninja import parse

    nf = parse(text)
    var, flags = nf.get("variables", {}), nf.get("flags", {})
    out = []
    if var.get("cxx", "c++") != env.get("CXX", "c++"):
        out.append(f"cxx = {var.get('cxx')} in build.ninja, CXX={env.get('CXX', '(unset)')} here")
    want_nvcc = env.get("FLASHINFER_NVCC", "$cuda_home/bin/nvcc")
    if "nvcc" in var and var["nvcc"] != want_nvcc:
        out.append(f"nvcc = {var['nvcc']} in build.ninja, FLASHINFER_NVCC gives {want_nvcc}")
    cuda = flags.get("cuda_cflags", [])
    threads = [f for f in cuda if f.startswith("--threads=")]
    want = f"--threads={env.get('FLASHINFER_NVCC_THREADS', '1')}"
    if threads and want not in threads:
        out.append(f"{threads[0]} in build.ninja, FLASHINFER_NVCC_THREADS gives {want}")
    if ("-ccbin" in cuda) != ("CC" in env):
        out.append("-ccbin in build.ninja without CC here" if "-ccbin" in cuda
                   else f"CC={env['CC']} here, no -ccbin in build.ninja")
    for key, fvar in (("FLASHINFER_EXTRA_LDFLAGS", "ldflags"),
                      ("FLASHINFER_EXTRA_CUDAFLAGS", "cuda_cflags"),
                      ("FLASHINFER_EXTRA_CFLAGS", "cflags")):
        extra = shlex.split(env.get(key, ""))
        have = flags.get(fvar, [])
        if extra and any(f not in have for f in extra):
            out.append(f"{key}={env[key]} here, not in build.ninja's {fvar}")
    return out


def describe_module(ws: str, name: str, ninja: str, env: Dict[str, str],
                    digests: DigestCache) -> ModuleManifest:
    """The manifest of ``<ws>/cached_ops/<name>`` (FidoctorError says why it cannot ship)."""
    mdir = os.path.join(ws, "cached_ops", name)
    bn = os.path.join(mdir, "build.ninja")
    so = os.path.join(mdir, f"{name}.so")
    for p, what in ((bn, "build.ninja"), (so, f"{name}.so"),
                    (os.path.join(mdir, ".ninja_log"), ".ninja_log"),
                    (os.path.join(mdir, ".ninja_deps"), ".ninja_deps")):
        if not os.path.isfile(p) or os.path.islink(p):
            raise FidoctorError(f"{name}: no {what} (FlashInfer ≥ 0.6.1 keeps one per module; "
                                "an unfinished or older-layout module cannot be shipped)")
    edges = graph.compdb(ninja, bn, env)
    outputs = {e["output"] for e in edges}
    for o in outputs:
        if os.path.dirname(o) != os.path.realpath(mdir) and os.path.dirname(o) != mdir:
            raise FidoctorError(f"{name}: output {o} is outside its module dir")
    log_version, log = ninjafiles.read_log(_read(os.path.join(mdir, ".ninja_log")))
    try:
        deps = ninjafiles.read_deps(_read(os.path.join(mdir, ".ninja_deps")))
    except ninjafiles.DepsError as err:
        raise FidoctorError(f"{name}: .ninja_deps: {err}") from None
    entries: List[LogEntry] = []
    for e in edges:
        le = log.get(e["output"])
        if le is None:
            raise FidoctorError(f"{name}: {os.path.basename(e['output'])} has no .ninja_log "
                                "entry (never finished building here)")
        if log_version and le["hash"] != ninjafiles.hash_command(e["command"], log_version):
            raise FidoctorError(f"{name}: build.ninja changed since "
                                f"{os.path.basename(e['output'])} was built (ninja would "
                                "rebuild it here too)", "warm it up again, then export")
        entries.append({"output": e["output"], "start": le["start"], "end": le["end"],
                        "mtime": le["mtime"], "hash": f"{le['hash']:x}"})
    dep_map: Dict[str, List[str]] = {}
    inputs: Dict[str, str] = {}
    for e in edges:
        if e["output"] in deps:
            dep_map[e["output"]] = deps[e["output"]][1]
        for p in [e["file"], *dep_map.get(e["output"], [])]:
            if p in outputs or p in inputs:
                continue
            sha = digests.get(p)
            if sha is None:
                raise FidoctorError(f"{name}: input {p} is missing or unreadable here")
            inputs[p] = sha
    files: List[FileEntry] = []
    for n in sorted(os.listdir(mdir)):
        p = os.path.join(mdir, n)
        if n in SKIP_IN_MODULE or n.endswith(".d") or not os.path.isfile(p) \
                or os.path.islink(p):
            continue
        files.append(file_entry(ws, p, digests))
    real_ws = os.path.realpath(ws)
    for p in sorted(inputs):
        if p.startswith(real_ws + os.sep) or p.startswith(ws.rstrip(os.sep) + os.sep):
            base = real_ws if p.startswith(real_ws + os.sep) else ws
            files.append(file_entry(base, p, digests))
    text = _read(bn).decode("utf-8", "surrogateescape")
    differ = env_disagreements(text, env)
    if differ:
        raise FidoctorError(f"{name}: built under another environment than this export's ("
                            + "; ".join(differ) + "); the manifest would promise the wrong one",
                            "run export with the environment the modules were built with")
    gencode = sorted({w for w in text.split() if w.startswith("-gencode=")})
    return {"name": name, "so": os.path.relpath(so, ws), "so_sha256": digests.get(so) or "",
            "build_ninja_sha256": digests.get(bn) or "", "gencode": gencode, "files": files,
            "ninja_log_version": log_version, "ninja_log": entries, "deps": dep_map,
            "inputs": inputs}
