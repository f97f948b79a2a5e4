"""Runs *inside the target interpreter* (Python 3.9+, stdlib only): never imports torch.

It is executed as a script with ``python -c``; it prints one JSON object. Keep it
free of fidoctor imports: the target environment does not have fidoctor.
"""

SCRIPT = r'''
import json, os, sys, site, sysconfig
out = {"executable": sys.executable, "version": sys.version.split()[0],
       "prefix": sys.prefix, "base_prefix": getattr(sys, "base_prefix", sys.prefix),
       "platlib": sysconfig.get_paths().get("platlib"), "packages": {}, "modules": {}}
try:
    out["site_packages"] = site.getsitepackages()
except Exception:
    out["site_packages"] = [p for p in sys.path if p.endswith("-packages")]
try:
    from importlib import metadata
except ImportError:
    metadata = None
NAMES = ["torch", "flashinfer-python", "flashinfer", "flashinfer-jit-cache", "flashinfer-cubin",
         "nvidia-cuda-runtime-cu11", "nvidia-cuda-runtime-cu12", "nvidia-cuda-runtime-cu13",
         "nvidia-cuda-runtime",
         "nvidia-cuda-nvcc-cu12", "nvidia-cuda-nvcc", "sglang", "vllm", "ninja", "filelock",
         "apache-tvm-ffi", "triton"]
for name in NAMES:
    if metadata is None:
        break
    try:
        dist = metadata.distribution(name)
    except Exception:
        continue
    info = {"version": dist.version}
    try:
        info["location"] = str(dist.locate_file(""))
    except Exception:
        pass
    out["packages"][name] = info
import importlib.util
for mod in ("torch", "flashinfer", "flashinfer_jit_cache", "flashinfer_cubin", "tvm_ffi"):
    try:
        spec = importlib.util.find_spec(mod)
    except Exception as e:
        out["modules"][mod] = {"error": "%s: %s" % (type(e).__name__, e)}
        continue
    if spec is None:
        continue
    locs = list(spec.submodule_search_locations or [])
    out["modules"][mod] = {"origin": spec.origin, "dir": locs[0] if locs else None}
print(json.dumps(out))
'''
