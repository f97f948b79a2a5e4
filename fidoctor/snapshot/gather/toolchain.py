"""What the toolkit's nvcc accepts, and what the target and its cache will ask of it.

- ``nvcc``: the option names of ``nvcc --help`` and the archs of
  ``nvcc --list-gpu-arch`` (absent before CUDA 11.0: recorded as an error).
- ``archs``: the archs the target will build (FLASHINFER_CUDA_ARCH_LIST, else
  TORCH_CUDA_ARCH_LIST for FlashInfer ≤ 0.2.5, which built through torch's
  cpp_extension, else the GPUs', else the cache's arch dirs), each
  checked with ``nvcc --dryrun -gencode=arch=compute_X,code=sm_X -x cu -c
  /dev/null``: nvcc's own verdict, nothing compiled.
- ``modules``: per cached module, the nvcc options, ``-gencode`` archs, debug
  flags and ``-L`` dirs its ``build.ninja`` passes (``cuda_cflags``/``ldflags``).
- ``host_config``: the preprocessor lines of the toolkit's
  ``crt/host_config.h`` (the host compiler guards nvcc enforces).

Every nvcc answer comes from fidoctor's tool cache when nvcc is unchanged
(fidoctor/toolcache.py), so a warm run starts no process; a cold one is
bounded by ``QUERY_BUDGET_S``. Data contract (``data["toolchain"]``, never
renamed): nvcc {path, version, options | options_error, archs | archs_error},
archs {source, value, entries: [{entry, arch, note}], checks: {arch: {ok,
message, how}}}, modules {name: {path, workspace_version, workspace_arch, options, tokens, gencode,
debug, ldirs}}, flag_checks {flag: {ok, message}} (nvcc's dryrun verdict on
flags ``--help`` does not list), env_flags {var: [flags]}
(FLASHINFER_EXTRA_CUDAFLAGS, NVCC_PREPEND_FLAGS, NVCC_APPEND_FLAGS: every
build gets them), host_config {path, lines: [[lineno, text]]} | null,
host {compiler {source, command, path, via, family, version}, macros (the
host compiler's predefined macros that host_config.h mentions) | macros_error,
allow_unsupported (env vars passing -allow-unsupported-compiler), candidates
[{cc, cxx, macros}] (other installed compilers, listed only when the guards
reject the current one), other_toolkits [{path, version, accepts}] (installed
toolkits whose own host_config.h accepts the current compiler; same condition)}
| null, link {dirs [{dir, source, libcuda}], found (the libcuda.so/.a
``-lcuda`` would use, or null), errors, stubs_elsewhere} | null, queries
{hits, ran, skipped}.
Typed as :class:`fidoctor.snapshot.types.ToolchainFacts` (and in snapshot.schema.json).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import tempfile
from typing import Any, Dict, List, Optional

from fidoctor.flashinfer import hostconfig as hc
from fidoctor.flashinfer import nvcc as rules
from fidoctor.fsutil import read_head
from fidoctor.toolcache import ToolCache

NAME = "toolchain"
BUDGET_S = 12.0
ORDER = 8
REQUIRES = ("toolkit", "cache", "gpu", "host_compiler", "target")
QUERY_BUDGET_S = 8.0
QUERY_TIMEOUT_S = 5.0
NINJA_MAX = 1 << 16  # cuda_cflags comes before the build edges (≈10 KB files)
MAX_MODULES = 5000
MAX_FLAG_CHECKS = 20
MAX_CANDIDATES = 12
_CC_NAME = re.compile(r"^(gcc|clang)(-\d+(?:\.\d+)*)?$")
_VAR_LINE = re.compile(r"^([A-Za-z_][\w.]*)\s*=\s*(.*)$")
_DIRECTIVE = re.compile(r"^\s*#\s*(if|ifdef|ifndef|elif|else|endif|error|define|undef)\b")


def ninja_vars(text: str, names: tuple) -> Dict[str, str]:
    """Top-level ``name = value`` lines of a build.ninja (``$``-continued lines joined)."""
    text = re.sub(r"\$\n[ \t]*", " ", text)
    out: Dict[str, str] = {}
    for line in text.splitlines():
        m = _VAR_LINE.match(line)
        if m and m.group(1) in names and m.group(1) not in out:
            out[m.group(1)] = m.group(2).strip()
    return out


def module_flags(path: str) -> Optional[Dict[str, Any]]:
    head = read_head(os.path.join(path, "build.ninja"), NINJA_MAX)
    if head is None:
        return None
    v = ninja_vars(head.decode("utf-8", "replace"), ("cuda_cflags", "ldflags", "cflags"))
    cuda = v.get("cuda_cflags", "").split()
    ld = v.get("ldflags", "").split()
    options = sorted({n for n in (rules.option_name(f) for f in cuda) if n})
    tokens = sorted({f for f in cuda if rules.option_name(f)})
    return {"options": options, "tokens": tokens, "gencode": rules.gencode_archs(cuda),
            "debug": rules.debug_flags(cuda),
            "ldirs": [f[2:] for f in ld if f.startswith("-L") and len(f) > 2],
            "has_cuda_cflags": "cuda_cflags" in v}


def _torch_builds(fi: Optional[str]) -> bool:
    """FlashInfer ≤ 0.2.5 built through torch.utils.cpp_extension, which reads
    TORCH_CUDA_ARCH_LIST; later releases run their own ninja and ignore it."""
    m = re.match(r"(\d+)\.(\d+)\.(\d+)", fi or "")
    return m is not None and tuple(int(x) for x in m.groups()) < (0, 2, 6)


def _reads_arch_list(fi: Optional[str]) -> bool:
    """FlashInfer 0.3+ parses FLASHINFER_CUDA_ARCH_LIST itself (``compilation_context.py``);
    0.2.x never reads it. Unknown (no FlashInfer seen): assume a current release."""
    m = re.match(r"(\d+)\.(\d+)\.(\d+)", fi or "")
    return m is None or tuple(int(x) for x in m.groups()) >= (0, 3, 0)


def arch_list_problem(value: str) -> Optional[str]:
    """Why FlashInfer's own parse of FLASHINFER_CUDA_ARCH_LIST raises (None: it does not).

    It runs at ``import flashinfer`` (0.3–0.7: ``for arch in value.split(" "): major, minor =
    arch.split("."); int(major); minor[-1].isalpha() or int(minor)``): an empty value, a ``;``,
    a newline or two spaces in a row make the import itself fail with ValueError."""
    for arch in value.split(" "):
        try:
            major, minor = arch.split(".")
            int(major)
            if not minor[-1].isalpha():
                int(minor)
        except (ValueError, IndexError) as e:
            return f"entry {arch!r}: {type(e).__name__}: {e}"
    return None


def _requested(env: Dict[str, str], cache: Dict[str, Any], gpus: List[Dict[str, Any]],
               version: Optional[str], fi: Optional[str] = None) -> Dict[str, Any]:
    src, value = None, ""
    names = ["FLASHINFER_CUDA_ARCH_LIST"] + (["TORCH_CUDA_ARCH_LIST"] if _torch_builds(fi) else [])
    if "FLASHINFER_CUDA_ARCH_LIST" in env and _reads_arch_list(fi):
        why = arch_list_problem(env["FLASHINFER_CUDA_ARCH_LIST"])
        if why:  # set, even empty: FlashInfer parses it at import and raises
            return {"source": "FLASHINFER_CUDA_ARCH_LIST", "unparsable": why,
                    "value": env["FLASHINFER_CUDA_ARCH_LIST"], "entries": [], "checks": {}}
    for var in names:
        if env.get(var, "").strip():
            src, value = var, env[var]
            break
    entries: List[Dict[str, Any]] = []
    if src == "TORCH_CUDA_ARCH_LIST":  # torch's spelling: 9.0 → sm_90, 9.0a kept, +PTX dropped
        for e in rules.split_arch_list(value):
            m = re.fullmatch(r"(\d+)\.(\d+)([a-z]?)(?:\+PTX)?", e)
            entries.append({"entry": e, "arch": "".join(m.groups()) if m else None,
                            "note": "" if m else f"{e!r} is not MAJOR.MINOR[suffix]"})
    elif src:
        for e in rules.split_arch_list(value):
            arch, note = rules.normalize_arch(e.replace("+PTX", ""), version)
            entries.append({"entry": e, "arch": arch, "note": note})
    elif gpus:
        src = "the GPUs' compute capability"
        for g in gpus:
            cc = g.get("compute_cap")
            if cc:
                arch, note = rules.arch_from_capability(str(cc), version)
                entries.append({"entry": str(cc), "arch": arch, "note": note})
    else:
        dirs = sorted({ws.get("arch") for ws in cache.get("workspaces", []) if ws.get("arch")})
        if dirs:
            src, value = "the cache's arch dirs (what it built before)", " ".join(dirs)
            for d in dirs:
                for a in rules.archs_of_dir(d):
                    entries.append({"entry": d, "arch": a, "note": ""})
    uniq: List[Dict[str, Any]] = []
    seen: set = set()
    for ent in entries:
        if ent["arch"] not in seen or ent["arch"] is None:
            uniq.append(ent)
            seen.add(ent["arch"])
    return {"source": src, "value": value, "entries": uniq, "checks": {}}


def _host_config(home: str) -> Optional[Dict[str, Any]]:
    for rel in ("targets/x86_64-linux/include", "targets/sbsa-linux/include", "include"):
        p = os.path.join(home, rel, "crt", "host_config.h")
        head = read_head(p, 1 << 18)
        if head is None:
            continue
        lines: List[List[Any]] = []
        pending, start = "", 0
        for i, ln in enumerate(head.decode("utf-8", "replace").splitlines(), 1):
            if not pending:
                start = i
            if ln.endswith("\\"):
                pending += ln[:-1] + " "
                continue
            ln, pending = pending + ln, ""
            if _DIRECTIVE.match(ln):
                lines.append([start, ln.strip()[:600]])
        return {"path": p, "lines": lines}
    return None


def _gpus(done) -> List[Dict[str, Any]]:
    sec = done.get("gpu")
    if sec is None or not sec.ok:
        return []
    return list((sec.data or {}).get("gpus") or [])


ENV_FLAG_VARS = ("FLASHINFER_EXTRA_CUDAFLAGS", "NVCC_PREPEND_FLAGS", "NVCC_APPEND_FLAGS")


def env_flags(env: Dict[str, str]) -> Dict[str, List[str]]:
    """nvcc options every build gets from the environment (FlashInfer's extra flags, and the
    NVCC_PREPEND/APPEND_FLAGS nvcc itself reads)."""
    out = {}
    for var in ENV_FLAG_VARS:
        toks = [t for t in env.get(var, "").split() if rules.option_name(t)]
        if toks:
            out[var] = toks
    return out


def _flag_checks(tools: ToolCache, exe: str, options: List[str], modules: Dict[str, Any],
                 env: Dict[str, str]) -> Dict[str, Any]:
    """nvcc's own verdict on each flag ``--help`` does not document (``-Xfatbin`` is
    accepted but undocumented): ``nvcc FLAG --dryrun -x cu -c /dev/null``."""
    suspects = sorted({tok for m in modules.values() for tok in m.get("tokens", [])
                       if not rules.known_option(rules.option_name(tok) or "", options)})
    out: Dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fidoctor-dryrun-") as tmp:
        for tok in suspects[:MAX_FLAG_CHECKS]:
            args = [tok, "--dryrun", "-x", "cu", "-c", "/dev/null", "-o", "fidoctor-dryrun.o"]
            r = tools.ask(exe, args, lambda r: {"ok": r.ok, "message": "" if r.ok else
                          rules.fatal_line(r.stderr or r.stdout)}, QUERY_TIMEOUT_S, env=env,
                          cwd=tmp)
            out[tok] = r.get("value") or {"ok": None, "message": r.get("error", "")}
    return out


def _profile_gcc(nvcc: str) -> Optional[str]:
    """A ``gcc`` in the dirs nvcc.profile puts first on PATH (Debian's package does so with a
    wrapper that picks gcc-11): what nvcc runs when no -ccbin is given."""
    here = os.path.dirname(nvcc)
    head = read_head(os.path.join(here, "nvcc.profile"), 1 << 16)
    if head is None:
        return None
    text = head.decode("utf-8", "replace")
    top = os.path.normpath(os.path.join(here, ".."))
    for m in re.finditer(r"^\s*PATH\s*\+=\s*(.*)$", text, re.M):
        value = m.group(1).replace("$(_HERE_)", here).replace("$(TOP)", top).replace(
            "$(_NVVM_BRANCH_)", "nvvm")
        for d in value.split(":"):
            cand = os.path.join(d.strip(), "gcc")
            if d.strip() and os.access(cand, os.X_OK):
                return cand
    return None


def _macros(tools: ToolCache, cc: str, env: Dict[str, str],
            want: List[str]) -> Dict[str, Any]:
    r = tools.ask(cc, ["-dM", "-E", "-x", "c++", "/dev/null"],
                  lambda r: hc.parse_macros(r.stdout) if r.ok else {"__failed__": r.describe()},
                  QUERY_TIMEOUT_S, env=dict(env, LC_ALL="C"))
    if "error" in r:
        return {"error": r["error"]}
    if "__failed__" in r["value"]:
        return {"error": r["value"]["__failed__"]}
    return {"macros": {k: v for k, v in r["value"].items() if k in want}}


def _compiler_candidates(env: Dict[str, str]) -> List[Dict[str, str]]:
    """Installed gcc-N / clang-N on the target's PATH and the usual dirs, with their C++."""
    dirs = [d for d in env.get("PATH", "").split(":") if d] + ["/usr/bin", "/usr/local/bin"]
    seen, out = set(), []
    for d in dict.fromkeys(dirs):
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        for n in names:
            m = _CC_NAME.match(n)
            p = os.path.join(d, n)
            if not m or not os.access(p, os.X_OK):
                continue
            real = os.path.realpath(p)
            if real in seen:
                continue
            seen.add(real)
            partner = os.path.join(d, ("g++" if m.group(1) == "gcc" else "clang++")
                                   + (m.group(2) or ""))
            out.append({"cc": p, "cxx": partner if os.access(partner, os.X_OK) else ""})
    return out[:MAX_CANDIDATES]


def _host(tools: ToolCache, ctx, done, nvcc: Optional[str],
          host_config: Optional[Dict[str, Any]],
          home: Optional[str] = None) -> Optional[Dict[str, Any]]:
    sec = done.get("host_compiler")
    if host_config is None or sec is None or not sec.ok:
        return None
    facts = (sec.data or {}).get("nvcc_host") or {}
    comp = {k: facts.get(k) for k in ("source", "command", "path", "family", "version")}
    comp["via"] = "-ccbin $CC" if facts.get("source") == "CC" else "gcc on the target's PATH"
    if facts.get("source") != "CC" and nvcc:
        prof = _profile_gcc(nvcc)
        if prof:
            comp.update(path=prof, command=prof, via="nvcc.profile's PATH", family=None,
                        version=None)
    want = hc.identifiers(host_config["lines"])
    out: Dict[str, Any] = {"compiler": comp, "allow_unsupported": [], "candidates": []}
    env = ctx.env
    for var in ("FLASHINFER_EXTRA_CUDAFLAGS", "NVCC_APPEND_FLAGS", "NVCC_PREPEND_FLAGS"):
        if "allow-unsupported-compiler" in env.get(var, ""):
            out["allow_unsupported"].append(var)
    path = comp.get("path")
    if not path:
        out["macros_error"] = f"{comp.get('command')}: not found"
        return out
    if (facts.get("run") or {}).get("timed_out") and comp.get("via") != "nvcc.profile's PATH":
        out["macros_error"] = f"{path} --version hung (host_compiler section); not asked again"
        return out
    m = _macros(tools, str(path), env, want)
    out["macros"], out["macros_error"] = m.get("macros"), m.get("error")
    if m.get("macros") is None:
        return out
    if hc.first_error(host_config["lines"], dict(m["macros"], __CUDACC__="1"))["error"]:
        for c in _compiler_candidates(env):
            if os.path.realpath(c["cc"]) == os.path.realpath(str(path)):
                continue
            cm = _macros(tools, c["cc"], env, want)
            if cm.get("macros") is not None:
                out["candidates"].append(dict(c, macros=cm["macros"]))
        out["other_toolkits"] = _toolkits_accepting(tools, str(path), env, done, home)
    return out


def _toolkits_accepting(tools: ToolCache, cc: str, env: Dict[str, str], done,
                        home: Optional[str]) -> List[Dict[str, Any]]:
    """Installed toolkits (/usr/local/cuda-*) whose own host_config.h accepts ``cc``."""
    sec = done.get("toolkit")
    installed = ((sec.data or {}).get("installed") or []) if sec is not None and sec.ok else []
    out = []
    for t in installed:
        if not t.get("has_nvcc") or (home and os.path.realpath(t["path"]) ==
                                     os.path.realpath(home)):
            continue
        other = _host_config(t["path"])
        if other is None:
            continue
        m = _macros(tools, cc, env, hc.identifiers(other["lines"]))
        if m.get("macros") is None:
            continue
        r = hc.first_error(other["lines"], dict(m["macros"], __CUDACC__="1"))
        out.append({"path": t["path"], "version": t.get("version"),
                    "accepts": r["error"] is None and not r["unknown"]})
    return out


def _search_dirs(tools: ToolCache, cxx: Optional[str], env: Dict[str, str]) -> Dict[str, Any]:
    """The dirs the link step searches for ``-lcuda`` besides ``-L``: gcc's library dirs
    (``c++ -print-search-dirs``) and ld's own ``SEARCH_DIR``s (``ld --verbose``)."""
    out: Dict[str, Any] = {"dirs": [], "errors": []}
    renv = dict(env, LC_ALL="C")
    if cxx:
        r = tools.ask(cxx, ["-print-search-dirs"], lambda r: [
            d for m in re.finditer(r"^libraries: =(.*)$", r.stdout, re.M)
            for d in m.group(1).split(":") if d] if r.ok else {"failed": r.describe()},
            QUERY_TIMEOUT_S, env=renv)
        if "error" in r or isinstance(r["value"], dict):
            out["errors"].append(f"{cxx} -print-search-dirs: "
                                 f"{r.get('error') or r['value']['failed']}")
        else:
            out["dirs"] += [(os.path.normpath(d), "c++ -print-search-dirs") for d in r["value"]]
    ld = shutil.which("ld", path=env.get("PATH", ""))
    if ld:
        r = tools.ask(ld, ["--verbose"], lambda r: re.findall(r'SEARCH_DIR\("=?([^"]+)"\)',
                      r.stdout) if r.ok else {"failed": r.describe()}, QUERY_TIMEOUT_S, env=renv)
        if "error" in r or isinstance(r["value"], dict):
            out["errors"].append(f"ld --verbose: {r.get('error') or r['value']['failed']}")
        else:
            out["dirs"] += [(os.path.normpath(d), "ld's SEARCH_DIR") for d in r["value"]]
    else:
        out["errors"].append("no ld on the target's PATH")
    return out


def _link(tools: ToolCache, ctx, done, home: Optional[str]) -> Optional[Dict[str, Any]]:
    """Where FlashInfer's link (``-L$cuda_home/lib64 -L$cuda_home/lib64/stubs -lcudart -lcuda``
    plus FLASHINFER_EXTRA_LDFLAGS) would find ``libcuda.so``; stubs elsewhere for a fix."""
    if not home:
        return None
    env = ctx.env
    dirs: List[Any] = [(os.path.join(home, "lib64"), "$cuda_home/lib64"),
                       (os.path.join(home, "lib64", "stubs"), "$cuda_home/lib64/stubs")]
    extra = env.get("FLASHINFER_EXTRA_LDFLAGS", "").split()
    for i, f in enumerate(extra):
        if f == "-L" and i + 1 < len(extra):
            dirs.append((extra[i + 1], "FLASHINFER_EXTRA_LDFLAGS"))
        elif f.startswith("-L") and len(f) > 2:
            dirs.append((f[2:], "FLASHINFER_EXTRA_LDFLAGS"))
    dirs += [(d, "LIBRARY_PATH") for d in env.get("LIBRARY_PATH", "").split(":") if d]
    sec = done.get("host_compiler")
    cxx = (((sec.data or {}).get("cxx") or {}).get("path")) if sec is not None and sec.ok \
        else None
    sd = _search_dirs(tools, cxx, env)
    dirs += sd["dirs"]
    out: Dict[str, Any] = {"dirs": [], "found": None, "errors": sd["errors"]}
    seen = set()
    for d, src in dirs:
        if d in seen:
            continue
        seen.add(d)
        hit = next((os.path.join(d, n) for n in ("libcuda.so", "libcuda.a")
                    if os.path.exists(os.path.join(d, n))), None)
        out["dirs"].append({"dir": d, "source": src, "libcuda": hit})
        if hit and out["found"] is None:
            out["found"] = hit
    if out["found"] is None:
        stubs = []
        for pat in ("/usr/local/cuda*/lib64/stubs/libcuda.so",
                    "/usr/local/cuda*/targets/*/lib/stubs/libcuda.so",
                    "/usr/lib/x86_64-linux-gnu/stubs/libcuda.so",
                    "/usr/lib/aarch64-linux-gnu/stubs/libcuda.so"):
            stubs += sorted(glob.glob(pat))
        out["stubs_elsewhere"] = stubs[:8]
    return out


def gather(ctx, done) -> Dict[str, Any]:
    tk_sec, cache_sec = done.get("toolkit"), done.get("cache")
    tk = tk_sec.data if tk_sec is not None and tk_sec.ok else {}
    cache = cache_sec.data if cache_sec is not None and cache_sec.ok else {}
    t = tk.get("toolkit") or {}
    nv = t.get("nvcc") or {}
    version = t.get("version")
    out: Dict[str, Any] = {"nvcc": None, "archs": None, "modules": {}, "host_config": None}
    tools = ToolCache(QUERY_BUDGET_S)

    tsec = done.get("target")
    pkgs = ((tsec.data or {}).get("packages") or {}) if tsec is not None and tsec.ok else {}
    fi = (pkgs.get("flashinfer-python") or pkgs.get("flashinfer") or {}).get("version")
    modules: Dict[str, Any] = {}
    # keyed by name: the target's own workspace first, and a name seen once keeps its first
    # entry (another version's leftover of the same name hid the target's own module)
    for ws in sorted(cache.get("workspaces", []), key=lambda w: w.get("version") != fi):
        for mod in ws.get("modules", []):
            if len(modules) >= MAX_MODULES or not mod.get("build_ninja") \
                    or mod["name"] in modules:
                continue
            f = module_flags(mod["path"])
            if f is not None:
                modules[mod["name"]] = dict(f, path=mod["path"],
                                            workspace_version=ws.get("version"),
                                            workspace_arch=ws.get("arch"))
    out["modules"] = modules
    if t.get("path"):
        out["host_config"] = _host_config(t["path"])

    runnable = nv.get("path") and nv.get("kind") not in ("absent", None) and nv.get("ok")
    if runnable:
        exe = nv["path"]
        n: Dict[str, Any] = {"path": exe, "version": version}
        r = tools.ask(exe, ["--help"], lambda r: rules.parse_help(r.stdout) if r.ok else
                      {"failed": r.describe()}, QUERY_TIMEOUT_S, env=ctx.env)
        if "error" in r or isinstance(r["value"], dict):
            n["options_error"] = r.get("error") or r["value"]["failed"]
        else:
            n["options"] = r["value"]
        r = tools.ask(exe, ["--list-gpu-arch"], lambda r: rules.parse_list_gpu_arch(r.stdout)
                      if r.ok else {"failed": r.describe()}, QUERY_TIMEOUT_S, env=ctx.env)
        if "error" in r or isinstance(r["value"], dict):
            n["archs_error"] = r.get("error") or r["value"]["failed"]
        else:
            n["archs"] = r["value"]
        out["nvcc"] = n
    req = _requested(ctx.env, cache, _gpus(done), version, fi)
    if runnable:
        with tempfile.TemporaryDirectory(prefix="fidoctor-dryrun-") as tmp:
            for e in req["entries"]:
                a = e["arch"]
                if a is None or a in req["checks"]:
                    continue
                args = ["--dryrun", f"-gencode=arch=compute_{a},code=sm_{a}", "-x", "cu",
                        "-c", "/dev/null", "-o", "fidoctor-dryrun.o"]
                r = tools.ask(nv["path"], args, lambda r: {"ok": r.ok, "message": "" if r.ok
                              else rules.fatal_line(r.stderr or r.stdout)},
                              QUERY_TIMEOUT_S, env=ctx.env, cwd=tmp)
                if "error" in r:
                    req["checks"][a] = {"ok": None, "message": r["error"], "how": "nvcc --dryrun"}
                else:
                    req["checks"][a] = dict(r["value"], how="nvcc --dryrun",
                                            command=f"{nv['path']} {' '.join(args)}")
    out["archs"] = req
    out["link"] = _link(tools, ctx, done, t.get("path") if t.get("exists") else None)
    out["host"] = _host(tools, ctx, done, nv.get("path") if runnable else None,
                        out["host_config"], t.get("path"))
    if runnable and "options" in out["nvcc"]:
        out["env_flags"] = env_flags(ctx.env)
        pseudo = {f"${var}": {"tokens": toks} for var, toks in out["env_flags"].items()}
        out["flag_checks"] = _flag_checks(tools, nv["path"], out["nvcc"]["options"],
                                          dict(modules, **pseudo),
                                          ctx.env)
    err = tools.save()
    out["queries"] = tools.summary()
    if err:
        out["queries"]["save_error"] = err
    return out
