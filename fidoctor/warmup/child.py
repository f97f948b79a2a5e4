"""Runs INSIDE the target interpreter: generate and build FlashInfer modules.

Started by fidoctor's supervisor as ``<target python> child.py '<json request>'``
in a session of its own. Uses only the stdlib, torch and flashinfer (never
fidoctor: the target venv does not have it) and must run on Python 3.9.
Talks back by lines ``@@fidoctor {json}`` on stdout; FlashInfer's own logging
goes to stderr, which the supervisor keeps for the error report.

Request: {"mode": "describe"|"build"|"serve", "modules": [{"key", "kind",
"dtype", "head_dim"}], "load": bool, "fa3_source": bool, "handshake": bool,
"ninja_text": bool}. describe with ninja_text: each cached module's spec also
carries the build.ninja FlashInfer would write now (nothing is written).
build: with handshake, after each ``spec`` event the child waits for one stdin
line ``{"go": bool, "max_jobs": int}`` before it builds that module, so one
interpreter (one torch import) serves the whole set (``--sequential``).
serve: the child emits every ``spec``, then obeys stdin lines until ``quit``:
``{"op": "write", "key"}`` writes the module's build.ninja (the supervisor
holds the module lock and runs the module's own ninja itself, several at
once); ``{"op": "load", "key"}`` loads the built module (GPU boxes).
"""

import inspect
import json
import os
import re
import sys
import time
import traceback

TAG = "@@fidoctor "
# The line that names the cause, most specific first: a link that cannot find
# -lcuda ends in "collect2: error: ld returned 1", which names nothing.
ERROR_PATTERNS = ("No space left on device", "unsupported GNU version", "cannot find -l",
                  "out of memory", "Killed", "fatal error", "undefined reference", "error:",
                  "error :", "cannot find", "No such file", "RuntimeError", "FAILED:")


def emit(event, **kw):
    kw["event"] = event
    kw["t"] = time.time()
    sys.stdout.write(TAG + json.dumps(kw, default=str) + "\n")
    sys.stdout.flush()


def first_error_line(text):
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    for pat in ERROR_PATTERNS:
        for ln in lines:
            if pat in ln and not ln.startswith("[") and "Ninja output" not in ln:
                return ln[:400]
    return (lines[0] if lines else "unknown error")[:400]


def generators(jit):
    names = ("gen_batch_decode_module", "gen_batch_prefill_module", "gen_single_decode_module",
             "gen_single_prefill_module", "get_batch_decode_uri", "get_batch_prefill_uri",
             "get_single_decode_uri", "get_single_prefill_uri")
    found = {}
    for modname in ("flashinfer.jit", "flashinfer.jit.attention",
                    "flashinfer.jit.attention.modules", "flashinfer.jit.attention.pytorch"):
        try:
            mod = __import__(modname, fromlist=["_"])
        except Exception:
            continue
        for n in names:
            if n not in found and hasattr(mod, n):
                found[n] = getattr(mod, n)
    return found


def gen_call(m, torch):
    """(generator name, its arguments) for one module of the request, the same in every
    family from 0.2.5 to 0.7.x (read in each release's jit/attention/*.py)."""
    dt = {"bf16": torch.bfloat16, "f16": torch.float16}[m["dtype"]]
    idx, hd, kind = torch.int32, int(m["head_dim"]), m["kind"]
    backend = kind.rsplit("-", 1)[1] if "prefill" in kind else None
    if kind == "decode":
        return "batch_decode", (dt, dt, dt, idx, hd, hd, 0, False, False)
    if kind == "single-decode":
        return "single_decode", (dt, dt, dt, hd, hd, 0, False, False)
    if kind.startswith("prefill"):
        return "batch_prefill", (backend, dt, dt, dt, idx, hd, hd, 0, False, False, False)
    return "single_prefill", (backend, dt, dt, dt, hd, hd, 0, False, False, False)


def make_spec(gens, m, torch, family="spec"):
    which, args = gen_call(m, torch)
    if family == "load_cuda_ops":
        return LegacySpec(gens, which, args)
    return gens[f"gen_{which}_module"](*args)


# ---- Family adapters -------------------------------------------------------------------
# Chosen by probing the installed FlashInfer (what its objects offer), never by version alone:
# - "spec" (0.2.6+): gen_*_module returns a JitSpec; build() runs its own ninja.
#     0.2.6-0.2.11: build(verbose) takes tmp/<name>.lock itself, no lock_path;
#     0.2.12-0.6.x: build(verbose, need_lock=True); 0.7.x: build(verbose=None, need_lock=False).
# - "load_cuda_ops" (0.2.0-0.2.5): gen_*_module IS the build: it writes the sources, takes
#     cached_ops/<name>.lock and calls torch.utils.cpp_extension.load, which builds (under
#     torch's baton cached_ops/<name>/lock) and loads in one call. The module name comes
#     from get_*_uri with the generator's own arguments.
# Anything else: "unsupported" (a clear warmup-unsupported-version, never a traceback).
UNSUPPORTED = "warmup-unsupported-version"


class LegacySpec:
    """A 0.2.0-0.2.5 module as the supervisor sees a JitSpec: its paths, and one call that
    builds and loads it (the generator)."""

    def __init__(self, gens, which, args):
        import flashinfer.jit as jit

        self._gen, self._args = gens[f"gen_{which}_module"], args
        self.name = gens[f"get_{which}_uri"](*args)
        jit_dir = legacy_jit_dir(jit)
        self.build_dir = jit_dir / self.name
        self.ninja_path = self.build_dir / "build.ninja"
        self.jit_library_path = self.build_dir / (self.name + ".so")
        self.lock_path = jit_dir / (self.name + ".lock")
        self.sources = []

    def build_and_load(self):
        import torch
        import torch.utils.cpp_extension as cpp_ext

        try:
            return self._gen(*self._args)
        except Exception as e:  # noqa: BLE001 - re-raised, with the real cause when known
            if getattr(cpp_ext, "CUDA_HOME", None) is not None:
                raise
            # torch says "CUDA_HOME environment variable is not set" even when it is set:
            # a CPU torch never takes it. Say what really stopped the build.
            raise RuntimeError(
                "torch.utils.cpp_extension found no CUDA toolkit (its CUDA_HOME is None{}), "
                "and FlashInfer 0.2.0-0.2.5 builds every module through it ({})".format(
                    f": torch {torch.__version__} is a CPU build, which ignores CUDA_HOME"
                    if getattr(torch.version, "cuda", None) is None else
                    ": set CUDA_HOME or put nvcc on PATH", str(e)[:200])) from e


def legacy_jit_dir(jit):
    """cached_ops (a pathlib.Path in every 0.2.x jit/env.py)."""
    d = getattr(jit, "FLASHINFER_JIT_DIR", None)
    if d is None:
        from flashinfer.jit import env as jit_env

        d = jit_env.FLASHINFER_JIT_DIR
    return d


def family(jit, gens):
    """("spec" | "load_cuda_ops" | "unsupported", why)."""
    needed = ("single_decode", "batch_decode", "single_prefill", "batch_prefill")
    if all((f"gen_{w}_module") in gens for w in needed):
        if hasattr(jit, "JitSpec") or hasattr(getattr(jit, "core", None), "JitSpec"):
            return "spec", "gen_*_module returns a JitSpec"
        if hasattr(jit, "load_cuda_ops") and all((f"get_{w}_uri") in gens for w in needed):
            return "load_cuda_ops", ("no JitSpec: each gen_*_module builds and loads through "
                                     "load_cuda_ops (torch.utils.cpp_extension.load)")
    missing = [(f"gen_{w}_module") for w in needed if (f"gen_{w}_module") not in gens]
    return "unsupported", ("its flashinfer.jit has no {}".format(", ".join(missing)) if missing else
                           "its generators neither return a JitSpec nor build through "
                           "load_cuda_ops")


def build_call(spec):
    """Build one module without loading it, holding its lock as FlashInfer's own
    build_and_load does: returns a zero-argument callable."""
    if isinstance(spec, LegacySpec):
        return spec.build_and_load  # the generator call: build and load are one
    params = inspect.signature(spec.build).parameters
    kw = {}
    verbose = params.get("verbose")
    if verbose is not None and verbose.default is inspect.Parameter.empty:
        kw["verbose"] = os.environ.get("FLASHINFER_JIT_VERBOSE", "0") == "1"
    if "need_lock" in params:
        kw["need_lock"] = True
        return lambda: spec.build(**kw)
    if verbose is not None and getattr(spec, "lock_path", None) is None:
        return lambda: spec.build(**kw)  # 0.2.6-0.2.11: build() takes tmp/<name>.lock itself

    def locked():
        from filelock import FileLock

        with FileLock(str(lock_path_of(spec)), thread_local=False):
            spec.build(**kw)
    return locked


def lock_path_of(spec):
    lock = getattr(spec, "lock_path", None)
    if lock is not None:
        return lock
    # 0.2.6-0.2.11: jit/core.py get_tmpdir() / f"{name}.lock"
    mdir = getattr(spec, "build_dir", None) or spec.ninja_path.parent
    return mdir.parent / "tmp" / (spec.name + ".lock")


def spec_paths(spec):
    name = spec.name
    ninja = getattr(spec, "ninja_path", None)
    mdir = getattr(spec, "build_dir", None) or (ninja.parent if ninja is not None else None)
    lib = getattr(spec, "jit_library_path", None) or (mdir / (name + ".so") if mdir else None)
    lock = lock_path_of(spec)
    sources = [str(s) for s in (getattr(spec, "sources", None) or [])]
    return {"name": name, "module_dir": str(mdir) if mdir else None,
            "so_path": str(lib) if lib else None, "lock_path": str(lock) if lock else None,
            "compiled": bool(lib and os.path.exists(str(lib))), "edges": len(sources) + 1,
            "generated_dir": str(os.path.dirname(sources[0])) if sources else None,
            "own_ninja": own_ninja(spec), "aot": aot_provided(spec)}


def aot_provided(spec):
    """Paths of prebuilt artifacts FlashInfer would load instead of building (data/aot, the
    flashinfer-jit-cache package), as its own lookup finds them; [] when none."""
    try:
        arts = getattr(spec, "aot_artifacts", None) or []
        if arts:
            return [str(getattr(a, "path", a)) for a in arts]
        if getattr(spec, "is_aot", False):
            return [str(spec.aot_path)]
    except Exception:  # noqa: BLE001 - a lookup that fails means "not provided"
        pass
    return []


def own_ninja(spec):
    """Whether the supervisor may run this module's ninja itself: FlashInfer 0.6.1+
    runs ``ninja -C cached_ops/<name>`` (a log per module); older ones share one
    ``.ninja_log`` in ``cached_ops``, so two ninjas at once would race on it."""
    import flashinfer

    v = re.match(r"(\d+)\.(\d+)\.(\d+)", getattr(flashinfer, "__version__", "") or "")
    new = bool(v) and tuple(int(x) for x in v.groups()) >= (0, 6, 1)
    return new and hasattr(spec, "write_ninja") and hasattr(spec, "build_dir")


def ninja_text(spec):
    """The build.ninja FlashInfer would write for this module now, without writing it
    (write_ninja runs with its write_if_different captured); None if it cannot be had."""
    fn = getattr(getattr(spec, "write_ninja", None), "__func__", None)
    g = getattr(fn, "__globals__", None)
    if g is None or "write_if_different" not in g:
        return None
    got = []
    orig = g["write_if_different"]
    g["write_if_different"] = lambda path, content: got.append(content)
    try:
        spec.write_ninja()
    except Exception:  # noqa: BLE001 - no text: the plan says it could not tell
        return None
    finally:
        g["write_if_different"] = orig
    return got[0] if got else None


def serve(specs, gpu, load):
    """Obey the supervisor's commands (see the module doc) until ``quit`` or EOF."""
    for raw in sys.stdin:
        cmd = json.loads(raw or "{}")
        op, key = cmd.get("op"), cmd.get("key")
        if op == "quit":
            return 0
        spec = specs.get(key)
        if spec is None:
            emit("failed", key=key, stage=op or "?", error="unknown module key")
            continue
        try:
            if op == "write":
                spec.write_ninja()
                emit("written", key=key, workdir=str(spec.build_dir),
                     ninja_file=str(spec.ninja_path))
            elif op == "load":
                if load and gpu:
                    spec.build_and_load()
                emit("loaded", key=key, loaded=bool(load and gpu))
        except Exception as e:  # noqa: BLE001
            emit("failed", key=key, stage=op, error=first_error_line(str(e)),
                 detail=str(e)[-4000:])
    return 0


def fa3_facts():
    """What really selects FA3 in this FlashInfer: read the installed source."""
    out = {"function": None, "env_vars_read": [], "disable_sm90_mentions": []}
    try:
        import flashinfer.utils as u

        fns = [getattr(u, n) for n in ("determine_attention_backend", "is_sm90a_supported",
                                       "is_fa3_backend_supported") if hasattr(u, n)]
        if fns:
            out["function"] = "flashinfer.utils.determine_attention_backend"
        src = "".join(inspect.getsource(f) for f in fns)
        out["env_vars_read"] = sorted(set(re.findall(r"environ(?:\.get)?\(?\[?[\"'](\w+)", src)
                                          + re.findall(r"getenv\([\"'](\w+)", src)))
        out["auto_requires"] = "compute capability 9.x and torch CUDA >= 12.3" \
            if "12.3" in src else "see is_sm90a_supported"
    except Exception as e:  # noqa: BLE001 - report, never crash describe
        out["error"] = repr(e)[:200]
    root = os.path.dirname(sys.modules["flashinfer"].__file__)
    for d, _, files in os.walk(root):
        for f in files:
            if f.endswith(".py"):
                p = os.path.join(d, f)
                try:
                    with open(p, errors="replace") as fh:
                        if "DISABLE_SM90" in fh.read():
                            out["disable_sm90_mentions"].append(os.path.relpath(p, root))
                except OSError:
                    pass
    return out


def main():
    req = json.loads(sys.argv[1])
    arch = os.environ.get("FLASHINFER_CUDA_ARCH_LIST")
    if arch and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
        # 0.2.0-0.3.x name the workspace's arch dir from torch's variable (0.3.1 jit/env.py too,
        # though it compiles for FLASHINFER_CUDA_ARCH_LIST); 0.2.0-0.3.0 also compile for it.
        os.environ["TORCH_CUDA_ARCH_LIST"] = ";".join(arch.split())
    try:
        import flashinfer
        import torch
    except Exception as e:  # noqa: BLE001
        emit("fatal", stage="import", error=first_error_line(repr(e)),
             detail=traceback.format_exc()[-2000:])
        return 3
    try:
        import flashinfer.jit as jit
    except ImportError as e:  # 0.1.x: prebuilt kernels only, no JIT to warm up
        if "flashinfer.jit" not in str(e):
            emit("fatal", stage="import", error=first_error_line(repr(e)),
                 detail=traceback.format_exc()[-2000:])
            return 3
        emit("fatal", stage="unsupported", version=getattr(flashinfer, "__version__", None),
             error="{}: FlashInfer {} has no flashinfer.jit (a release before 0.2.0 ships "
             "prebuilt kernels only): nothing to warm up".format(
                 UNSUPPORTED, getattr(flashinfer, "__version__", "?")))
        return 3
    except Exception as e:  # noqa: BLE001
        emit("fatal", stage="import", error=first_error_line(repr(e)),
             detail=traceback.format_exc()[-2000:])
        return 3
    env = getattr(jit, "env", None)
    gpu = None
    try:
        if torch.cuda.is_available():
            gpu = list(torch.cuda.get_device_capability(0))
    except Exception:
        gpu = None
    info = {"version": getattr(flashinfer, "__version__", None), "torch": torch.__version__,
            "torch_cuda": getattr(torch.version, "cuda", None), "gpu": gpu,
            "python": sys.version.split()[0],
            "workspace": str(getattr(env, "FLASHINFER_WORKSPACE_DIR", "") or "") or None,
            "jit_dir": str(getattr(env, "FLASHINFER_JIT_DIR", "") or "") or None,
            "arch_list": os.environ.get("FLASHINFER_CUDA_ARCH_LIST"),
            # what --once stats on a warm start instead of importing these again
            "package_files": {n: getattr(sys.modules[n], "__file__", None)
                              for n in ("flashinfer", "torch")}}
    if req.get("fa3_source"):
        info["fa3"] = fa3_facts()
    gens = generators(jit)
    fam, why = family(jit, gens)
    info["family"], info["family_reason"] = fam, why
    emit("info", **info, generators=sorted(g for g in gens if g.startswith("gen_")))
    if fam == "unsupported":
        emit("fatal", stage="unsupported", version=info["version"],
             error="{}: fidoctor warmup cannot drive FlashInfer {}: {}".format(
                 UNSUPPORTED, info["version"], why))
        return 3
    rc = 0
    specs = {}
    for m in req.get("modules", []):
        try:
            spec = make_spec(gens, m, torch, fam)
        except Exception as e:  # noqa: BLE001
            emit("failed", key=m["key"], stage="generate", error=first_error_line(str(e)),
                 detail=traceback.format_exc()[-3000:])
            rc = 1
            continue
        paths = spec_paths(spec)
        specs[m["key"]] = spec
        if req.get("ninja_text") and paths["compiled"]:
            paths["ninja_text"] = ninja_text(spec)
        emit("spec", key=m["key"], **paths)
        if req["mode"] != "build":
            continue
        if req.get("handshake"):
            # The supervisor deals with orphaned compilers and picks MAX_JOBS (FlashInfer
            # reads it when ninja starts) once it knows the module's paths.
            cmd = json.loads(sys.stdin.readline() or '{"go": false}')
            if not cmd.get("go"):
                emit("skipped", key=m["key"])
                continue
            if cmd.get("max_jobs"):
                os.environ["MAX_JOBS"] = str(cmd["max_jobs"])
        t0 = time.time()
        legacy = isinstance(spec, LegacySpec)
        emit("building", key=m["key"], name=spec.name,
             load=bool(legacy or (req.get("load") and gpu)))
        try:
            if req.get("load") and gpu:
                spec.build_and_load()
            else:
                build_call(spec)()
        except Exception as e:  # noqa: BLE001
            emit("failed", key=m["key"], stage="build", seconds=time.time() - t0,
                 error=first_error_line(str(e)), detail=str(e)[-4000:])
            rc = 1
            continue
        emit("done", key=m["key"], seconds=time.time() - t0,
             so_size=os.path.getsize(paths["so_path"]) if paths["so_path"]
             and os.path.exists(paths["so_path"]) else None)
    if req["mode"] == "serve":
        emit("ready", keys=sorted(specs))
        return serve(specs, gpu, req.get("load"))
    return rc


if __name__ == "__main__":
    sys.exit(main())
