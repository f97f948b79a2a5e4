"""One 'rank' of a server cold-starting a FlashInfer module: FlashInfer's own build_and_load
(JIT lock, ninja) for one warmup spec, then a load. Prints JSON lines with wall-clock stamps.

    python bench/h200/rank.py prefill-fa2:f16:128
"""

import importlib.util
import json
import os
import sys
import time

t0 = time.time()
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
spec = importlib.util.spec_from_file_location("fidoctor_child",
                                              os.path.join(ROOT, "fidoctor", "warmup", "child.py"))
child = importlib.util.module_from_spec(spec)
spec.loader.exec_module(child)
import flashinfer.jit as jit  # noqa: E402
import torch  # noqa: E402

kind, dtype, hd = sys.argv[1].split(":")
s = child.make_spec(child.generators(jit), {"kind": kind, "dtype": dtype, "head_dim": hd}, torch)
print(json.dumps({"event": "imported", "pid": os.getpid(), "t": time.time(), "import_s":
                  round(time.time() - t0, 2), "name": s.name}), flush=True)
t = time.time()
s.build_and_load()
print(json.dumps({"event": "loaded", "pid": os.getpid(), "t": time.time(),
                  "build_and_load_s": round(time.time() - t, 2)}), flush=True)
