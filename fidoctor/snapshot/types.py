"""Data contracts of snapshot sections, as types a probe can import.

A section's ``data`` is plain JSON (it is saved, replayed, pasted into issues);
these TypedDicts say which keys a probe may rely on. Never rename or repurpose
a key: add a new one. ``total=False`` because an older snapshot, or a source
that could not be read, leaves keys out; every absence that matters is also
recorded as a value (``present: False``, ``error``, ``result``) so a probe can
tell "not there" from "not looked at".
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, TypedDict


class ToolRun(TypedDict, total=False):
    """One guarded run of an external tool (``nvidia-smi``, ``gcc --version``)."""

    path: Optional[str]  # the executable found (None: not found anywhere looked)
    ran: bool            # it was started
    ok: bool             # exit 0 within the timeout
    timed_out: bool
    result: str          # one line: "ok", "timed out: …", "exit 9: …", "not found: …"


class GpuDevice(TypedDict, total=False):
    """One GPU as the driver reports it."""

    index: int
    name: str                        # "NVIDIA H200"
    compute_cap: Optional[str]       # "9.0"; None when the driver cannot say (old nvidia-smi)
    sm: Optional[str]                # "90": compute_cap without the dot, as arch lists spell it
    pci_bus_id: str                  # "00000000:00:06.0"
    memory_total_mib: Optional[int]
    source: str                      # "nvidia-smi" | "/proc/driver/nvidia/gpus"


class LibcudaFacts(TypedDict, total=False):
    """The ``libcuda.so.1`` (the driver's user-space half) the target loads or would load."""

    soname: str                      # always "libcuda.so.1"
    path: Optional[str]              # as found (None: none found)
    realpath: Optional[str]          # "/usr/local/nvidia/lib64/libcuda.so.580.159.04"
    via: str                         # "LD_PRELOAD" | "LD_LIBRARY_PATH" | "/etc/ld.so.cache" |
    #                                  "default dir" | "/proc/PID/maps"
    steps: List[str]                 # the search as text, for evidence
    version: Optional[str]           # driver version from the real file's name ("580.159.04")
    cuda_version: Optional[str]      # cuDriverGetVersion() of that file: "13.0"
    cuda_version_result: str         # how asking it went (one line)


class ProcDriverFacts(TypedDict, total=False):
    """``/proc/driver/nvidia/version`` (the loaded kernel module)."""

    path: str
    present: bool
    text: str                        # first lines, verbatim
    version: Optional[str]           # "580.159.04"


class GpuFacts(TypedDict, total=False):
    """Section ``gpu``: GPUs, driver, the CUDA version the driver supports, libcuda.

    ``present`` is False on a box with no NVIDIA driver; ``absent_reasons``
    then says what was looked at. Each ``*_source`` names where a value was read.
    """

    present: bool
    gpus: List[GpuDevice]
    driver_version: Optional[str]             # "580.159.04"
    driver_version_source: str                # "nvidia-smi" | "/proc/driver/nvidia/version" | …
    cuda_driver_version: Optional[str]        # highest CUDA the driver supports: "13.0"
    cuda_driver_version_source: str           # "cuDriverGetVersion (libcuda)" | "nvidia-smi"
    nvidia_smi: ToolRun
    proc_driver: ProcDriverFacts
    libcuda: LibcudaFacts
    absent_reasons: List[str]


class CompilerFacts(TypedDict, total=False):
    """One host compiler: how it was chosen, where it is, what it is."""

    role: str               # "nvcc host compiler" | "C++ compiler"
    source: str             # "CC" (→ nvcc -ccbin) | "CXX" | "PATH" (nvcc's/FlashInfer's default)
    command: str            # as given or defaulted: "/usr/bin/gcc-12", "gcc", "c++"
    path: Optional[str]     # resolved on the target's PATH (None: not found)
    realpath: Optional[str]
    family: Optional[str]   # "gcc" | "clang" | "icx" | "nvhpc" | "unknown"
    version: Optional[str]  # "13.3.0"
    major: Optional[int]    # 13
    banner: str             # first line of ``--version``
    run: ToolRun


class HostCompilerFacts(TypedDict, total=False):
    """Section ``host_compiler``.

    ``nvcc_host`` is the compiler nvcc runs for host code: ``-ccbin $CC`` when
    CC is set (FlashInfer forwards CC, not CXX), else ``gcc`` on the target's
    PATH (nvcc's default). ``cxx`` compiles FlashInfer's .cpp files and links:
    ``$CXX``, else ``c++``.
    """

    nvcc_host: CompilerFacts
    cxx: CompilerFacts
    ccbin: Optional[str]    # the -ccbin value FlashInfer passes (None: CC unset)


class ServerFacts(TypedDict, total=False):
    """A live serving process (``fidoctor.servers``) and the interpreter it really runs."""

    pid: int
    cmdline: str
    reasons: List[str]              # why it counts: "maps libtorch", "runs a server (…)", …
    python: Optional[str]           # resolved as --pid would (None: could not tell)
    how: str
    flashinfer_root: str            # its $FLASHINFER_WORKSPACE_BASE (else $HOME)/.cache/flashinfer
    flashinfer: Optional[str]       # FlashInfer in its interpreter's site-packages (None: none)


class VenvFacts(TypedDict, total=False):
    """An environment on disk whose site-packages hold FlashInfer."""

    python: str
    prefix: str
    kind: str                       # "venv" | "conda" | "prefix"
    flashinfer: str                 # version from the dist-info ("?": a package dir only)
    where: str                      # how it was found


class ServingFacts(TypedDict, total=False):
    """Section ``serving``: candidates when the target was not named (no --python/--pid)."""

    explicit: bool                  # the user named the target: nothing searched
    servers: List[ServerFacts]
    venvs: List[VenvFacts]
    looked: int                     # prefixes examined
    truncated: bool                 # stopped at the cap


class NvccFacts(TypedDict, total=False):
    """What the toolkit's nvcc documents and accepts (cached per nvcc: fidoctor/toolcache.py)."""

    path: str
    version: Optional[str]
    options: List[str]              # option names of ``nvcc --help``, long and short
    options_error: str              # why --help could not be read
    archs: List[str]                # ``nvcc --list-gpu-arch`` without "compute_": ["75", "90"]
    archs_error: str                # absent before CUDA 11.0, or nvcc could not be asked


class ArchCheck(TypedDict, total=False):
    ok: Optional[bool]              # nvcc's --dryrun verdict (None: not asked)
    message: str                    # nvcc's "nvcc fatal : …" line when refused
    how: str                        # "nvcc --dryrun"
    command: str


class ArchRequest(TypedDict, total=False):
    source: Optional[str]           # "FLASHINFER_CUDA_ARCH_LIST" | … | None (nothing names one)
    value: str
    entries: List[dict]             # [{entry: "9.0", arch: "90a" | None, note}]
    checks: dict                    # {arch: ArchCheck}
    unparsable: str                 # why FlashInfer's own parse of the list raises (0.3+)


class ToolchainModule(TypedDict, total=False):
    """One cached module's build.ninja, as nvcc would receive it."""

    path: str
    workspace_version: Optional[str]
    workspace_arch: Optional[str]
    options: List[str]              # nvcc option names in cuda_cflags
    tokens: List[str]               # those flags as written ("--compress-mode=size")
    gencode: List[str]              # archs of -gencode=arch=compute_XX
    debug: List[str]                # -G / --device-debug / -O0 found
    ldirs: List[str]                # -L dirs of ldflags
    has_cuda_cflags: bool


class HostConfigFacts(TypedDict, total=False):
    path: str                       # the toolkit's crt/host_config.h
    lines: List[list]               # [[line number, preprocessor line]] (continuations joined)


class ToolchainHostFacts(TypedDict, total=False):
    compiler: dict                  # {source, command, path, via, family, version}
    macros: Optional[dict]          # its predefined macros that host_config.h mentions
    macros_error: Optional[str]
    allow_unsupported: List[str]    # env vars passing -allow-unsupported-compiler
    candidates: List[dict]          # [{cc, cxx, macros}] other installed compilers
    other_toolkits: List[dict]      # [{path, version, accepts}] installed toolkits' verdicts


class LinkFacts(TypedDict, total=False):
    dirs: List[dict]                # [{dir, source, libcuda}] in the link's search order
    found: Optional[str]            # the libcuda.so/.a -lcuda resolves to (None: nothing)
    errors: List[str]               # search dirs that could not be determined
    stubs_elsewhere: List[str]      # stub libcuda.so files on this machine, for a fix


class ToolchainFacts(TypedDict, total=False):
    """Section ``toolchain`` (fidoctor/snapshot/gather/toolchain.py)."""

    nvcc: Optional[NvccFacts]       # None: no runnable nvcc (cuda-toolkit-unusable says why)
    archs: ArchRequest
    modules: dict                   # {module name: ToolchainModule}
    flag_checks: dict               # {flag: ArchCheck-like {ok, message}}
    env_flags: dict                 # {FLASHINFER_EXTRA_CUDAFLAGS | NVCC_*_FLAGS: [flags]}
    host_config: Optional[HostConfigFacts]
    host: Optional[ToolchainHostFacts]
    link: Optional[LinkFacts]
    queries: dict                   # {path, hits, ran, skipped}


class TorchAbiFacts(TypedDict, total=False):
    """Section ``torch_abi`` (fidoctor/snapshot/gather/torch_abi.py)."""

    torch_lib: Optional[str]
    torch_libs: List[str]
    modules: dict                   # {so path: {module, module_dir, kind, needs, missing,
                                    #   missing_count, abi_twins, error}}
    scanned: int                    # prebuilt files looked at
    truncated: bool


# --- The main sections every JIT probe reads: target, host, cache, processes, locks. ---


class PackageFacts(TypedDict, total=False):
    """One distribution in the target (``importlib.metadata``, read in the target)."""

    version: str
    location: str


class ModuleLocation(TypedDict, total=False):
    """Where an importable top-level module is, found in the target without importing it."""

    dir: str
    origin: str
    error: str                       # "ModuleNotFoundError: …" when it could not be found


class TorchFileFacts(TypedDict, total=False):
    """``torch/version.py`` read as text (never imported)."""

    version: str                     # "2.13.0+cpu"
    cuda: Optional[str]              # torch's CUDA ("12.4"); None for a CPU build


class TargetFacts(TypedDict, total=False):
    """Section ``target`` (fidoctor/snapshot/gather/target.py): the serving interpreter.

    ``usable`` False: the interpreter is missing, broken or hung; ``reason`` says which.
    """

    usable: bool
    python: str                      # as given (--python, the --pid's interpreter, …)
    reason: str                      # why not usable
    stderr_tail: str
    stdout_tail: str
    executable: str                  # sys.executable in the target
    version: str                     # "3.11.7"
    prefix: str
    base_prefix: str
    platlib: str
    site_packages: List[str]
    packages: Dict[str, PackageFacts]        # {"flashinfer-python": {...}, "torch": {...}}
    modules: Dict[str, ModuleLocation]       # {"flashinfer": {...}, "torch": {...}}
    torch: TorchFileFacts
    interpreter: Dict[str, Any]      # --pid: how the interpreter was chosen (evidence)


class CacheFsFacts(TypedDict, total=False):
    fstype: str
    mountpoint: str
    opts: str
    free_bytes: int


class HostFacts(TypedDict, total=False):
    """Section ``host`` (fidoctor/snapshot/gather/host.py)."""

    hostname: str
    kernel: str
    machine: str
    cpu_count: Optional[int]
    cpu_affinity: Optional[int]      # cores this process may run on
    mem_total: int                   # bytes
    mem_available: int               # bytes (MemAvailable)
    fidoctor_python: str
    cache_fs: CacheFsFacts
    uid: int


class SoFacts(TypedDict, total=False):
    """A module's ``.so`` as found on disk (never loaded)."""

    path: str
    kind: Optional[str]              # "file" | "symlink" | "absent" | "denied" | …
    size: Optional[int]
    mtime: Optional[float]
    problem: Optional[str]           # "empty", "truncated", "not ELF: …"; None: looks loadable
    symlink: bool


class BatonFacts(TypedDict, total=False):
    """torch's FileBaton ``cached_ops/<module>/lock`` (FlashInfer ≤ 0.2.5)."""

    path: str
    mtime: Optional[float]
    ino: Optional[int]
    dev: Optional[int]


class ModuleFacts(TypedDict, total=False):
    """One ``cached_ops/<module>/`` directory (fidoctor/snapshot/gather/cache.py)."""

    name: str
    path: str
    error: str                       # the dir could not be listed
    objects: int                     # *.o files
    objects_mtime: List[float]       # [oldest, newest] object mtime
    stale_depfiles: List[str]        # *.o.d left by an interrupted compile
    ninja_lock: bool
    has_ninja_log: bool
    so_files: List[str]
    so: Optional[SoFacts]            # None: no .so at all
    baton: BatonFacts
    build_ninja: bool
    build_ninja_mtime: Optional[float]
    ninja_vars: Dict[str, str]       # cuda_home, cxx, nvcc, name from build.ninja's head
    cuda_compile_edges: int          # for a module without .so: objects to build
    newest_mtime: Optional[float]


class LockFileFacts(TypedDict, total=False):
    """A lock file in a workspace, as the ``cache`` section lists it."""

    path: str
    module: Optional[str]
    style: str                       # "flock" | "flock-toplevel" | "baton" | …
    ino: Optional[int]
    dev: Optional[int]
    size: Optional[int]
    mtime: Optional[float]


class WorkspaceFacts(TypedDict, total=False):
    """One ``<root>/[<version>/]<arch>/`` workspace."""

    path: str
    version: Optional[str]           # FlashInfer version dir (0.4.1+ layout), else None
    arch: Optional[str]              # "90a", "75_80_89"; None when not in the path
    log: Optional[Dict[str, Any]]    # flashinfer_jit.log's lstat facts + path; None: absent
    modules: List[ModuleFacts]
    locks: List[LockFileFacts]
    errors: List[str]


class CacheFacts(TypedDict, total=False):
    """Section ``cache``: the FlashInfer cache root and its workspaces, in every layout."""

    root: str                        # $FLASHINFER_WORKSPACE_BASE (else $HOME)/.cache/flashinfer
    root_kind: str                   # "dir" | "absent" | "symlink" | "denied" | …
    root_real: str                   # when root is a symlink
    root_error: str                  # why lstat of the root failed (root_kind "error")
    workspaces: List[WorkspaceFacts]


class ProcessFacts(TypedDict, total=False):
    """One process of a FlashInfer build tree, or a Python process above one."""

    pid: int
    ppid: int
    ppid_chain: List[int]
    name: str
    exe: str
    argv: List[str]
    cwd: str
    state: str                       # psutil's status ("running", "sleeping", "stopped", "zombie")
    state_code: str                  # "R", "S", "T", "Z", "D"
    wchan: str
    cpu_s: float                     # CPU seconds gained over the sampling window
    rss: int
    uid: int
    sid: int
    pgid: int
    create_time: float
    module: Optional[str]            # the module it builds, when its argv names one
    module_dir: Optional[str]
    parent_name: str
    parent_exe: str
    parent_exists: bool
    parent_is_python: bool
    parent_sid: int
    orphaned: bool                   # tree roots: its Python is gone (fidoctor.proctree)
    in_target: bool                  # its module dir lies in the target's cache
    env_max_jobs: Optional[str]      # MAX_JOBS in its environment
    denied: bool                     # /proc/PID could not be read in full
    argv_truncated: bool
    vol_ctx: int                     # voluntary context switches
    vol_ctx_delta: int               # … over the sampling window
    cpu_s_end: float
    cpu_delta_s: float
    rss_end: int
    exited: bool                     # gone before the window ended
    appeared: bool                   # started during the window
    majflt: int                      # major page faults (/proc/PID/stat), cumulative
    majflt_end: int
    majflt_delta: int                # … over the sampling window (a thrashing compiler:
                                     # its own code refaulted, tens to hundreds a second)
    memcg: Optional[str]             # its memory cgroup path (fidoctor.memcg.memcg_of)


class ProcessesFacts(TypedDict, total=False):
    """Section ``processes`` (fidoctor/snapshot/gather/processes.py)."""

    processes: List[ProcessFacts]
    groups: Dict[str, List[int]]     # {pgid: pids}
    sample_window_s: float
    self_pid: int
    target_root: str


class LockWaiter(TypedDict, total=False):
    pid: int
    confidence: str                  # "seen" | "likely" | "possible"
    reasons: List[str]


class LockFacts(TypedDict, total=False):
    """One JIT lock with who holds, waits for and has it open (section ``locks``)."""

    path: str
    style: str                       # "flock" | "flock-toplevel" | "baton"
    module: Optional[str]
    workspace: str
    module_dir: str
    ino: Optional[int]
    dev: Optional[int]
    dev_hex: Optional[str]
    mtime: Optional[float]
    match: str                       # how /proc/locks entries were matched
    holders: List[int]
    blocked: List[int]
    open_by: List[int]
    waiters: List[LockWaiter]


class LocksFacts(TypedDict, total=False):
    """Section ``locks`` (fidoctor/snapshot/gather/locks.py)."""

    locks: List[LockFacts]
    procs: Dict[str, Dict[str, Any]]  # {pid: description of a holder or waiter}
    proc_locks_ok: bool
    proc_locks_error: str
    own_pids: List[int]
    fd_scan: Dict[str, int]
    sample_window_s: float
    idle_lock_files: int  # none held: the unheld flock files counted, not listed (any level)


# --- Section ``oom`` (fidoctor/snapshot/gather/oom.py): the target's memory cgroup. ---

class MemcgStat(TypedDict, total=False):
    """memory.stat, the part that tells a fitting build from a thrashing one (bytes, counts)."""

    anon: int                        # v1 total_rss, v2 anon
    file: int                        # v1 total_cache, v2 file (page cache: code pages too)
    pgmajfault: int                  # major faults of every task in the cgroup, cumulative
    refault_file: int                # workingset_refault_file: reclaimed pages read back


class MemcgPressure(TypedDict, total=False):
    """v2 memory.pressure (PSI): % of time some / all tasks stalled on memory."""

    some_avg10: float
    full_avg10: float
    some_avg60: float
    full_avg60: float


class MemcgSample(TypedDict, total=False):
    """Growth of the cgroup's counters over ``window_s`` (taken only near the limit)."""

    window_s: float
    usage_end: Optional[int]
    failcnt: Optional[int]           # v1: charges that hit the limit (None on v2)
    max: Optional[int]               # v2 memory.events max (None on v1)
    oom_kill: Optional[int]
    pgmajfault: Optional[int]
    refault_file: Optional[int]


class CgroupFacts(TypedDict, total=False):
    """The target's memory cgroup (``--pid``; else fidoctor's own)."""

    source: str
    version: Optional[int]           # 1 | 2 | None (no memory controller found)
    path: str
    dir: str
    events: Dict[str, int]           # oom, oom_kill, max (v1: oom_kill, under_oom)
    events_local: Dict[str, int]     # v2: this cgroup only
    failcnt: Optional[int]           # v1
    limit: Optional[int]             # None: no limit
    peak: Optional[int]
    usage: Optional[int]             # v1 memory.usage_in_bytes, v2 memory.current
    stat: MemcgStat
    pressure: MemcgPressure          # v2 only, where the kernel keeps PSI
    sample: MemcgSample              # only when usage is within 10 % of the limit
    error: str


class KernelKill(TypedDict, total=False):
    time: float
    pid: int
    task: str
    memcg: Optional[str]
    task_memcg: Optional[str]
    line: str


class KernelLogFacts(TypedDict, total=False):
    status: str                      # ok | denied | absent | error
    error: str
    kills: List[KernelKill]
    scanned: int


class OomFacts(TypedDict, total=False):
    """Section ``oom`` (fidoctor/snapshot/gather/oom.py)."""

    cgroup: CgroupFacts
    kernel: KernelLogFacts
