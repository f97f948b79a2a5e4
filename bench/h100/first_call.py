"""A server's first FA3 prefill call (cold JIT build), as SGLang/vLLM would make it.

argv[1]: head dim (256 by default: a module the default warmup set does not build).
"""

import sys
import time

import flashinfer
import torch

hd = int(sys.argv[1]) if len(sys.argv) > 1 else 256
q = torch.randn(2048, 32, hd, dtype=torch.bfloat16, device="cuda")
k = torch.randn(2048, 8, hd, dtype=torch.bfloat16, device="cuda")
v = torch.randn(2048, 8, hd, dtype=torch.bfloat16, device="cuda")
t = time.time()
out = flashinfer.single_prefill_with_kv_cache(q, k, v, causal=True, backend="fa3")
torch.cuda.synchronize()
print(f"first call {time.time() - t:.1f} s, finite={bool(torch.isfinite(out).all())}")
