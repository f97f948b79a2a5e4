"""A server's first single-decode call (f16, head dim 128) under whatever
FLASHINFER_CUDA_ARCH_LIST the environment has: built on first use, then launched.
Prints one JSON line: the build time and the exception FlashInfer/CUDA raised, if any."""

import json
import os
import time
import traceback

t0 = time.time()
import flashinfer  # noqa: E402
import torch  # noqa: E402

out = {"arch_list": os.environ.get("FLASHINFER_CUDA_ARCH_LIST"),
       "device": torch.cuda.get_device_name(), "cc": list(torch.cuda.get_device_capability()),
       "import_s": round(time.time() - t0, 2)}
q = torch.randn(32, 128, dtype=torch.float16, device="cuda")
k = torch.randn(1024, 8, 128, dtype=torch.float16, device="cuda")
v = torch.randn(1024, 8, 128, dtype=torch.float16, device="cuda")
t = time.time()
try:
    o = flashinfer.single_decode_with_kv_cache(q, k, v)
    torch.cuda.synchronize()
    out["ok"] = bool(torch.isfinite(o).all())
except Exception as e:  # the real error is the point
    out["error_type"] = type(e).__name__
    out["error"] = str(e)[:2000]
    out["traceback_tail"] = traceback.format_exc().splitlines()[-6:]
out["first_call_s"] = round(time.time() - t, 2)
print(json.dumps(out), flush=True)
