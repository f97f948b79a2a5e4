"""Kernel time of the same causal prefill on FlashInfer's FA3 (sm90) and FA2 backends.

Uses the batch (ragged) prefill wrapper, i.e. the modules `fidoctor warmup` builds
(bf16, head dim 128, 32 q / 8 kv heads). CUDA events around each call, warm, the
median of many; prints JSON. Run on the device machine after warmup.
"""

import json
import statistics
import sys

import flashinfer
import torch

REPS, WARM = 100, 10
SHAPES = [(1, 2048), (8, 1024), (1, 8192), (16, 512)]  # (requests, tokens each)


def time_backend(backend, n_req, seq):
    torch.manual_seed(0)
    total = n_req * seq
    q = torch.randn(total, 32, 128, dtype=torch.bfloat16, device="cuda")
    k = torch.randn(total, 8, 128, dtype=torch.bfloat16, device="cuda")
    v = torch.randn(total, 8, 128, dtype=torch.bfloat16, device="cuda")
    indptr = torch.arange(0, total + 1, seq, dtype=torch.int32, device="cuda")
    ws = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    w = flashinfer.BatchPrefillWithRaggedKVCacheWrapper(ws, "NHD", backend=backend)
    w.plan(indptr, indptr, 32, 8, 128, causal=True, q_data_type=torch.bfloat16)
    out = w.run(q, k, v)
    for _ in range(WARM):
        w.run(q, k, v)
    times = []
    for _ in range(REPS):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        w.run(q, k, v)
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return out.float(), statistics.median(times), min(times), max(times)


def main():
    rows = []
    for n_req, seq in SHAPES:
        row = {"requests": n_req, "tokens_each": seq}
        outs = {}
        for backend in ("fa2", "fa3"):
            try:
                out, med, lo, hi = time_backend(backend, n_req, seq)
                outs[backend] = out
                row[backend] = {"median_ms": round(med, 4), "min_ms": round(lo, 4), "max_ms": round(hi, 4)}
            except Exception as e:  # report, keep going
                row[backend] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        if len(outs) == 2:
            ref = outs["fa2"]
            row["rel_diff_fa3_vs_fa2"] = float((outs["fa3"] - ref).norm() / ref.norm())
            row["fa3_speedup"] = round(row["fa2"]["median_ms"] / row["fa3"]["median_ms"], 3)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    print(json.dumps({"gpu": torch.cuda.get_device_name(), "reps": REPS, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
