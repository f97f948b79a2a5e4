"""A server's first use of FlashInfer on a GPU: the default set (decode, FA2 and FA3 batch
prefill; bf16 and f16; head dim 128) built one after another in one process, as SGLang/vLLM
would on first use (no MAX_JOBS: ninja -j nproc+2). Then it serves (sleeps) until SIGTERM."""

import signal
import sys
import time

import torch
from flashinfer.jit import gen_batch_decode_module, gen_batch_prefill_module

signal.signal(signal.SIGTERM, lambda s, f: sys.exit(0))
print("server: starting", flush=True)
for dt in (torch.bfloat16, torch.float16):
    for kind in ("decode", "fa2", "fa3"):
        if kind == "decode":
            spec = gen_batch_decode_module(dt, dt, dt, torch.int32, 128, 128, 0, False, False)
        else:
            spec = gen_batch_prefill_module(kind, dt, dt, dt, torch.int32, 128, 128, 0, False,
                                            False, False)
        t = time.time()
        spec.build_and_load()
        print(f"server: {spec.name} {time.time() - t:.1f} s", flush=True)
print("server: ready", flush=True)
while True:
    time.sleep(1)
