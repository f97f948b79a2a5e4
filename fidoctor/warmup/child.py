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
             "gen_single_prefill_module")
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


def make_spec(gens, m, torch):
    dt = {"bf16": torch.bfloat16, "f16": torch.float16}[m["dtype"]]
    idx, hd, kind = torch.int32, int(m["head_dim"]), m["kind"]
    backend = kind.rsplit("-", 1)[1] if "prefill" in kind else None
    if kind == "decode":
        return gens["gen_batch_decode_module"](dt, dt, dt, idx, hd, hd, 0, False, False)
    if kind == "single-decode":
        return gens["gen_single_decode_module"](dt, dt, dt, hd, hd, 0, False, False)
    if kind.startswith("prefill"):
        return gens["gen_batch_prefill_module"](backend, dt, dt, dt, idx, hd, hd, 0, False,
                                                False, False)
    return gens["gen_single_prefill_module"](backend, dt, dt, dt, hd, hd, 0, False, False, False)


def spec_paths(spec):
    name = spec.name
    ninja = getattr(spec, "ninja_path", None)
    mdir = getattr(spec, "build_dir", None) or (ninja.parent if ninja is not None else None)
    lib = getattr(spec, "jit_library_path", None) or (mdir / (name + ".so") if mdir else None)
    lock = getattr(spec, "lock_path", None)
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
    try:
        import flashinfer
        import flashinfer.jit as jit
        import torch
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
            "arch_list": os.environ.get("FLASHINFER_CUDA_ARCH_LIST")}
    if req.get("fa3_source"):
        info["fa3"] = fa3_facts()
    gens = generators(jit)
    emit("info", **info, generators=sorted(gens))
    if len(gens) < 4:
        emit("fatal", stage="api",
             error="this FlashInfer ({}) has no gen_*_module generators (family "
             "0.2.0-0.2.5 builds inside its kernels' first call); warmup needs 0.2.6+"
             .format(info["version"]))
        return 3
    rc = 0
    specs = {}
    for m in req.get("modules", []):
        try:
            spec = make_spec(gens, m, torch)
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
        emit("building", key=m["key"], name=spec.name, load=bool(req.get("load") and gpu))
        try:
            if req.get("load") and gpu:
                spec.build_and_load()
            elif "need_lock" in inspect.signature(spec.build).parameters:
                spec.build(need_lock=True)
            else:
                from filelock import FileLock

                with FileLock(paths["lock_path"]):
                    spec.build()
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
