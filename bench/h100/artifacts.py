"""Collect small real artifacts from the device's FlashInfer cache into DIR (argv[1]).

The JIT log, a listing of the cache tree, the first 12 lines of each build.ninja,
and `readelf -dW` / `nm -D --undefined-only` of one FA2 and one FA3 module.
"""

import os
import subprocess
import sys

out = sys.argv[1]
ws = os.environ["FLASHINFER_WORKSPACE_BASE"]
root = os.path.join(ws, ".cache", "flashinfer")
with open(os.path.join(out, "tree.txt"), "w") as f:
    for d, _, files in sorted(os.walk(root)):
        if "/generated" in d:
            continue
        for n in sorted(files):
            p = os.path.join(d, n)
            f.write(f"{os.path.getsize(p):>10} {os.path.relpath(p, ws)}\n")
for d, _, files in os.walk(root):
    for n in files:
        p = os.path.join(d, n)
        if n == "flashinfer_jit.log":
            subprocess.run(["cp", p, os.path.join(out, "flashinfer_jit.log")])
        if n == "build.ninja":
            with open(p) as src, open(os.path.join(out, "build_ninja_heads.txt"), "a") as dst:
                dst.write(f"== {os.path.relpath(p, ws)}\n" + "".join(src.readlines()[:12]))
done = set()
for d, _, files in os.walk(root):
    for n in files:
        if n.endswith(".so") and n.startswith("batch_prefill") and "bf16" in n:
            kind = "fa3" if n.endswith("_sm90.so") else "fa2"
            if kind in done:
                continue
            done.add(kind)
            p = os.path.join(d, n)
            for tool, args in (("readelf", ["-dW"]), ("nm", ["-D", "--undefined-only"])):
                r = subprocess.run([tool, *args, p], capture_output=True, text=True)
                with open(os.path.join(out, f"{kind}_{tool}.txt"), "w") as f:
                    f.write(f"$ {tool} {' '.join(args)} <{kind} module {n}>\n{r.stdout}{r.stderr}")
