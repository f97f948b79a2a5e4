"""GPUs, the NVIDIA driver, the CUDA version it supports, and the libcuda the target loads.

Why: nvcc must not target a newer arch than it knows (compute capability),
a toolkit or runtime newer than the driver fails at load
(``cudaErrorInsufficientDriver``), and a cache built for one arch is useless
on another. Each of those needs the facts here, read from three independent
sources so one missing tool does not blind us:

- ``nvidia-smi --query-gpu=… --format=csv`` (guarded, timeout): names,
  compute capability, driver version; the plain banner gives the driver's
  CUDA version when libcuda cannot be asked;
- ``/proc/driver/nvidia/version`` and ``/proc/driver/nvidia/gpus/*/information``
  (the loaded kernel module; no tool needed);
- the ``libcuda.so.1`` the target would load (LD_PRELOAD, LD_LIBRARY_PATH,
  ld.so.cache, default dirs; with ``--pid`` what ``/proc/PID/maps`` shows
  wins): its real file name carries the driver version, and
  ``cuDriverGetVersion()`` (asked in a child process with a timeout) the
  highest CUDA version it supports.

No driver at all is a fact (``present: False`` with ``absent_reasons``), not
an error. Data contract: :class:`fidoctor.snapshot.types.GpuFacts`.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import sys
from typing import Any, Dict, List, Optional, Tuple

from fidoctor import proc
from fidoctor.flashinfer import cudart as rules
from fidoctor.fsutil import read_head
from fidoctor.snapshot.gather._ld import ldcache, search
from fidoctor.snapshot.types import GpuDevice, GpuFacts, LibcudaFacts, ProcDriverFacts, ToolRun

NAME = "gpu"
BUDGET_S = 25.0
ORDER = 3
SMI_TIMEOUT_S = 8.0
DRIVER_ASK_TIMEOUT_S = 8.0
SMI_FIELDS = "index,name,compute_cap,driver_version,pci.bus_id,memory.total"
SMI_DIRS = ("/usr/bin", "/usr/local/nvidia/bin", "/usr/local/bin", "/bin")
PROC_VERSION = "/proc/driver/nvidia/version"
PROC_GPUS = "/proc/driver/nvidia/gpus"
LIBCUDA = "libcuda.so.1"
_LIBCUDA_NAME = re.compile(r"^libcuda\.so(?:\.|$)")
_LIBCUDA_VERSION = re.compile(r"^libcuda\.so\.(\d+\.\d+(?:\.\d+)?)$")
_PROC_VERSION = re.compile(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d+\.\d+(?:\.\d+)?)")
_BANNER = re.compile(r"Driver Version:\s*(\S+)\s+CUDA Version:\s*(\d+\.\d+)")
ASK_SCRIPT = r'''
import ctypes, sys
try:
    lib = ctypes.CDLL(sys.argv[1])
    v = ctypes.c_int(0)
    rc = lib.cuDriverGetVersion(ctypes.byref(v))
    print("ok %d %d" % (rc, v.value))
except BaseException as e:
    print("error %s: %s" % (type(e).__name__, e))
'''


def cuda_version_from_int(v: int) -> str:
    """``cuDriverGetVersion``'s 13000 → "13.0", 12040 → "12.4"."""
    return f"{v // 1000}.{(v % 1000) // 10}"


def _none_if_na(v: str) -> Optional[str]:
    v = v.strip()
    return None if not v or v.startswith("[") or v.upper() in ("N/A", "[N/A]") else v


def parse_smi_csv(text: str) -> Tuple[List[GpuDevice], Optional[str]]:
    """``--query-gpu=SMI_FIELDS --format=csv,noheader,nounits`` → (gpus, driver version)."""
    gpus: List[GpuDevice] = []
    driver = None
    for line in (text or "").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 6 or not parts[0].isdigit():
            continue
        idx, name, cap, drv, bus, mem = parts[:6]
        cc = _none_if_na(cap)
        if cc is not None and not re.match(r"^\d+\.\d+$", cc):
            cc = None
        gpus.append(GpuDevice(index=int(idx), name=name, compute_cap=cc,
                              sm=cc.replace(".", "") if cc else None, pci_bus_id=bus,
                              memory_total_mib=int(mem) if mem.isdigit() else None,
                              source="nvidia-smi"))
        driver = driver or _none_if_na(drv)
    return gpus, driver


def parse_smi_banner(text: str) -> Dict[str, str]:
    """Plain ``nvidia-smi``'s header → {"driver_version", "cuda_version"} (empty if absent)."""
    m = _BANNER.search(text or "")
    return {"driver_version": m.group(1), "cuda_version": m.group(2)} if m else {}


def parse_proc_version(text: str) -> Optional[str]:
    """``NVRM version: NVIDIA UNIX … Kernel Module  580.159.04  …`` → "580.159.04"."""
    m = _PROC_VERSION.search(text or "")
    return m.group(1) if m else None


def parse_gpu_information(text: str) -> Dict[str, str]:
    """``/proc/driver/nvidia/gpus/BUS/information`` → {"name", "pci_bus_id"} as present."""
    out: Dict[str, str] = {}
    for line in (text or "").splitlines():
        key, _, val = line.partition(":")
        key, val = key.strip(), val.strip()
        if key == "Model" and val:
            out["name"] = val
        elif key == "Bus Location" and val:
            out["pci_bus_id"] = val
    return out


def libcuda_version(realpath: Optional[str]) -> Optional[str]:
    """The driver version in the real file's name: ``libcuda.so.580.159.04`` → "580.159.04"."""
    m = _LIBCUDA_VERSION.match(os.path.basename(realpath or ""))
    return m.group(1) if m and "." in m.group(1) else None


def find_smi(env: Dict[str, str]) -> Optional[str]:
    found = shutil.which("nvidia-smi", path=env.get("PATH", ""))
    if found:
        return found
    return next((os.path.join(d, "nvidia-smi") for d in SMI_DIRS
                 if os.access(os.path.join(d, "nvidia-smi"), os.X_OK)), None)


def _tool(path: Optional[str], r: Optional[proc.RunResult]) -> ToolRun:
    if r is None:
        return ToolRun(path=path, ran=False, ok=False, timed_out=False,
                       result="not found: nvidia-smi (target's PATH, " + ", ".join(SMI_DIRS) + ")")
    return ToolRun(path=path, ran=not r.error, ok=r.ok, timed_out=r.timed_out, result=r.describe())


def _smi(env: Dict[str, str], out: GpuFacts) -> Dict[str, str]:
    """Run nvidia-smi (query, then the banner only if needed later); fill gpus/driver."""
    path = find_smi(env)
    if path is None:
        out["nvidia_smi"] = _tool(None, None)
        return {}
    senv = {"PATH": env.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
    for k in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"):
        if k in env:
            senv[k] = env[k]
    r = proc.run([path, f"--query-gpu={SMI_FIELDS}", "--format=csv,noheader,nounits"],
                 timeout=SMI_TIMEOUT_S, env=senv)
    old_driver = not r.ok and "compute_cap" in (r.stdout + r.stderr)
    if old_driver:  # drivers before ~510 cannot report compute_cap: ask without it
        r = proc.run([path, f"--query-gpu={SMI_FIELDS.replace(',compute_cap', ',index')}",
                      "--format=csv,noheader,nounits"], timeout=SMI_TIMEOUT_S, env=senv)
    out["nvidia_smi"] = _tool(path, r)
    if r.ok:
        gpus, drv = parse_smi_csv(r.stdout)
        if old_driver:
            for g in gpus:
                g["compute_cap"] = g["sm"] = None
        out["gpus"] = gpus
        if drv:
            out["driver_version"], out["driver_version_source"] = drv, "nvidia-smi"
    return senv


def _proc_driver(out: GpuFacts) -> None:
    head = read_head(PROC_VERSION, 4096)
    pd = ProcDriverFacts(path=PROC_VERSION, present=head is not None)
    if head is not None:
        text = head.decode("utf-8", "replace")
        pd["text"] = "\n".join(text.splitlines()[:3])
        pd["version"] = parse_proc_version(text)
        if pd["version"] and not out.get("driver_version"):
            out["driver_version"], out["driver_version_source"] = pd["version"], PROC_VERSION
    out["proc_driver"] = pd
    if out.get("gpus"):
        return
    gpus: List[GpuDevice] = []
    for i, info in enumerate(sorted(glob.glob(os.path.join(PROC_GPUS, "*", "information")))):
        raw = read_head(info, 8192)
        facts = parse_gpu_information(raw.decode("utf-8", "replace")) if raw else {}
        if facts.get("name"):
            gpus.append(GpuDevice(index=i, name=facts["name"], compute_cap=None, sm=None,
                                  pci_bus_id=facts.get("pci_bus_id", ""), memory_total_mib=None,
                                  source=PROC_GPUS))
    if gpus:
        out["gpus"] = gpus


def _mapped(pid: int) -> Tuple[List[str], str]:
    try:
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as f:
            paths = rules.parse_maps(f.read(), "libcuda")
    except OSError as e:
        return [], e.strerror or str(e)
    return [p for p in paths if _LIBCUDA_NAME.match(os.path.basename(p))], ""


def find_libcuda(env: Dict[str, str], pid: Optional[int] = None) -> LibcudaFacts:
    """Which libcuda.so.1 the target maps (``--pid``) or would map, with the search as text."""
    steps: List[str] = []
    found, via = None, ""
    if pid:
        paths, err = _mapped(pid)
        if paths:
            found, via = paths[0], f"/proc/{pid}/maps"
            steps.append(f"/proc/{pid}/maps: {paths[0]} mapped")
        else:
            steps.append(f"/proc/{pid}/maps: " + (err or "no libcuda mapped (CUDA not "
                                                   "initialised in that process yet?)"))
    if found is None:
        for p in (env.get("LD_PRELOAD") or "").replace(" ", ":").split(":"):
            if p and _LIBCUDA_NAME.match(os.path.basename(p)) and os.path.exists(p):
                found, via = p, "LD_PRELOAD"
                steps.append(f"LD_PRELOAD: {p}")
                break
    if found is None:
        dirs = rules.search_dirs(None, None, "/", env.get("LD_LIBRARY_PATH"))
        found, more = search(LIBCUDA, dirs, ldcache(env, "libcuda.so")["entries"])
        steps += more
        if found:
            last = more[-1]
            via = last.split(":", 1)[0] if ":" in last else "search"
    facts = LibcudaFacts(soname=LIBCUDA, path=found, steps=steps, via=via)
    if found is None:
        facts["realpath"] = facts["version"] = facts["cuda_version"] = None
        facts["cuda_version_result"] = "no libcuda.so.1 found"
        return facts
    real = os.path.realpath(found)
    facts["realpath"] = real
    facts["version"] = libcuda_version(real)
    facts["cuda_version"], facts["cuda_version_result"] = ask_driver(real)
    return facts


def ask_driver(path: str, timeout: float = DRIVER_ASK_TIMEOUT_S) -> Tuple[Optional[str], str]:
    """``cuDriverGetVersion()`` of the libcuda at ``path``, in a child with a deadline."""
    r = proc.run([sys.executable, "-c", ASK_SCRIPT, path], timeout=timeout,
                 env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"})
    if not r.ok:
        return None, r.describe()
    line = (r.stdout.strip().splitlines() or [""])[-1]
    parts = line.split()
    if len(parts) == 3 and parts[0] == "ok" and parts[1] == "0" and parts[2].isdigit() \
            and int(parts[2]) > 0:
        return cuda_version_from_int(int(parts[2])), f"cuDriverGetVersion() = {parts[2]}"
    if len(parts) == 3 and parts[0] == "ok":
        return None, f"cuDriverGetVersion() returned CUresult {parts[1]}, version {parts[2]}"
    return None, line[:300] or "no answer"


def gather(ctx: Any, done: Dict[str, Any]) -> GpuFacts:
    env = ctx.env
    out = GpuFacts(gpus=[], driver_version=None, driver_version_source="",
                   cuda_driver_version=None, cuda_driver_version_source="")
    senv = _smi(env, out)
    _proc_driver(out)
    lc = find_libcuda(env, ctx.pid)
    out["libcuda"] = lc
    if lc.get("version") and not out.get("driver_version"):
        out["driver_version"], out["driver_version_source"] = lc["version"], "libcuda file name"
    if lc.get("cuda_version"):
        out["cuda_driver_version"] = lc["cuda_version"]
        out["cuda_driver_version_source"] = "cuDriverGetVersion (libcuda)"
    elif out["nvidia_smi"].get("ok"):
        r = proc.run([out["nvidia_smi"]["path"] or "nvidia-smi"], timeout=SMI_TIMEOUT_S, env=senv)
        banner = parse_smi_banner(r.stdout) if r.ok else {}
        if banner:
            out["cuda_driver_version"] = banner["cuda_version"]
            out["cuda_driver_version_source"] = "nvidia-smi"
    reasons = []
    if not out["nvidia_smi"].get("ok"):
        reasons.append(f"nvidia-smi: {out['nvidia_smi'].get('result')}")
    if not out["proc_driver"].get("present"):
        reasons.append(f"{PROC_VERSION}: absent (no NVIDIA kernel module loaded)")
    if not lc.get("path"):
        reasons.append("libcuda.so.1: not found (" + "; ".join(lc.get("steps", [])[-2:]) + ")")
    out["present"] = bool(out["gpus"] or out["driver_version"] or lc.get("cuda_version"))
    out["absent_reasons"] = reasons
    return out
