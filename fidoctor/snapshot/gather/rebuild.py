"""Will the next start recompile cached modules? build.ninja as written vs as FlashInfer would write it now.

FlashInfer rewrites ``build.ninja`` whenever its text differs
(``write_if_different``) and ninja then recompiles every object whose command
changed. The text depends on the *string* CUDA_HOME resolves to (not its
realpath: ``/usr/local/cuda`` and ``/usr/local/cuda-13.0`` differ), on ``CXX``
and on ``FLASHINFER_NVCC_THREADS``. This gatherer compares what each built
module recorded with what the target's environment gives now (the toolkit
gatherer resolves CUDA_HOME exactly as FlashInfer does), then asks the real
ninja (``-n -d explain``, dry run, cached; fidoctor.flashinfer.ninja) on a few
modules under a budget: the changed text for modules that differ, the file as
it is for some that do not (sources newer than objects after a reinstall).

Data contract (``data``; never renamed):
  now: {cuda_home, cuda_home_source, cxx, nvcc_threads, cc}   what FlashInfer would write
  ninja: the ninja binary used (the target's PATH, its venv's bin, else ours)
  checked: built modules compared; families: workspace → family compared (C/D only)
  differ: [{module, path, workspace, recorded: {cuda_home, cxx | nvcc_threads, ccbin},
           fields: [...], sampled (nvcc's --threads and -ccbin are compared on a sample
           only: the flags lie past the head the cache gatherer reads)}]
  threads_sampled: modules whose cuda_cflags were compared
  differ_count: len before capping at MAX_LISTED
  recorded_toolkits: {recorded cuda_home: {exists, nvcc, realpath}}
  explained: [Explain (ninja.py) + {module, variant: "as-now" | "as-is"}]
  budget_s, spent_s
"""

from __future__ import annotations

import os
import re
import shutil
import time
from typing import Any, Dict, List, Optional

from fidoctor.flashinfer import ninja
from fidoctor.flashinfer.layout import family_of
from fidoctor.fsutil import read_head

NAME = "rebuild"
BUDGET_S = 4.0
ORDER = 7
REQUIRES = ("cache", "toolkit", "target")
EXPLAIN_BUDGET_S = 1.5
PER_CALL_S = 1.0
SAMPLE_DIFFER = 3
SAMPLE_SAME = 2
MAX_LISTED = 50
_THREADS = re.compile(r"--threads[= ](\d+)")


def _ninja_binary(ctx) -> str:
    found = shutil.which("ninja", path=ctx.env.get("PATH", ""))
    if found:
        return found
    beside = os.path.join(os.path.dirname(ctx.python), "ninja")
    if os.access(beside, os.X_OK):
        return beside
    return shutil.which("ninja") or "ninja"


def _threads(env: Dict[str, str]) -> str:
    return env.get("FLASHINFER_NVCC_THREADS", "1")


def _extra_key(done) -> str:
    """Inputs ninja compares that our fingerprints do not see: the installed sources."""
    t = done["target"].data if "target" in done and done["target"].ok else {}
    fi = (t.get("modules", {}).get("flashinfer") or {}).get("dir") or ""
    try:
        m = os.stat(os.path.join(fi, "__init__.py")).st_mtime_ns if fi else 0
    except OSError:
        m = 0
    version = (t.get("packages", {}).get("flashinfer-python") or {}).get("version")
    return f"{version}:{fi}:{m}"


def _flag_changes(text: str, now: Dict[str, Any]) -> tuple:
    """(fields, recorded values, the text as FlashInfer would write it) for nvcc's
    ``--threads`` (FLASHINFER_NVCC_THREADS) and ``-ccbin`` (CC) in ``cuda_cflags``."""
    nf = ninja.parse(text)
    if "cuda_cflags" not in nf.get("flags", {}):
        return [], {}, text  # not a FlashInfer 0.4+ file: nothing to compare
    flags = list(nf["flags"]["cuda_cflags"])
    fields: List[str] = []
    rec: Dict[str, Any] = {}
    m = _THREADS.search(" ".join(flags))
    if m and m.group(1) != now["nvcc_threads"]:
        fields.append("nvcc_threads")
        rec["nvcc_threads"] = m.group(1)
        flags = [_THREADS.sub(f"--threads={now['nvcc_threads']}", f) for f in flags]
    old_cc = flags[flags.index("-ccbin") + 1] if "-ccbin" in flags[:-1] else None
    if old_cc != now.get("cc"):
        fields.append("ccbin")
        rec["ccbin"] = old_cc
        if old_cc is not None:
            i = flags.index("-ccbin")
            del flags[i:i + 2]
        if now.get("cc"):
            flags += ["-ccbin", now["cc"]]
    if not fields:
        return [], {}, text
    return fields, rec, ninja.with_variable(text, "cuda_cflags", " ".join(flags))


def gather(ctx, done) -> Dict[str, Any]:
    t0 = time.monotonic()
    cache = done["cache"].data if done["cache"].ok else {}
    tk = done["toolkit"].data if "toolkit" in done and done["toolkit"].ok else {}
    target = done["target"].data if "target" in done and done["target"].ok else {}
    res = tk.get("resolution") or {}
    now = {"cuda_home": res.get("path"), "cuda_home_source": res.get("source"),
           "cxx": ctx.env.get("CXX") or "c++", "nvcc_threads": _threads(ctx.env),
           "cc": ctx.env.get("CC") or None}
    tversion = (target.get("packages", {}).get("flashinfer-python") or {}).get("version")
    differ: List[Dict[str, Any]] = []
    same: List[str] = []
    families: Dict[str, Optional[str]] = {}
    checked = 0
    for ws in cache.get("workspaces", []):
        fam = family_of(ws.get("version") or tversion)
        families[ws["path"]] = fam
        if fam not in ("C", "D") or not now["cuda_home"]:
            continue
        for m in ws.get("modules", []):
            vars_ = m.get("ninja_vars") or {}
            if not m.get("so") or not m.get("build_ninja") or "cuda_home" not in vars_:
                continue
            checked += 1
            fields = [k for k in ("cuda_home", "cxx") if k in vars_ and vars_[k] != now[k]]
            if fields:
                differ.append({"module": m["name"], "path": m["path"], "workspace": ws["path"],
                               "recorded": {k: vars_.get(k) for k in ("cuda_home", "cxx")},
                               "fields": fields})
            else:
                same.append(m["path"])
    recorded: Dict[str, Any] = {}
    for d in differ:
        home = d["recorded"].get("cuda_home")
        if home and home not in recorded:
            nvcc = os.path.join(home, "bin", "nvcc")
            recorded[home] = {"exists": os.path.isdir(home), "nvcc": os.access(nvcc, os.X_OK),
                              "realpath": os.path.realpath(home)}
    nbin = _ninja_binary(ctx)
    texts: Dict[str, str] = {}
    for d in differ[:SAMPLE_DIFFER]:
        raw = read_head(os.path.join(d["path"], "build.ninja"), ninja.MAX_BYTES)
        if raw is None:
            continue
        text = raw.decode("utf-8", "replace")
        for k in d["fields"]:
            text = ninja.with_variable(text, k, str(now[k]))
        texts[d["path"]] = text
    # Flags live past the head the cache gatherer reads: compare nvcc's --threads (from
    # FLASHINFER_NVCC_THREADS, default 1 since 0.3.0) on a sample of the matching modules.
    still_same: List[str] = []
    threads_sampled = 0
    for path in same[:SAMPLE_SAME]:
        raw = read_head(os.path.join(path, "build.ninja"), ninja.MAX_BYTES)
        if raw is None:
            still_same.append(path)
            continue
        text = raw.decode("utf-8", "replace")
        threads_sampled += 1
        fields, rec, new_text = _flag_changes(text, now)
        if fields:
            differ.append({"module": os.path.basename(path), "path": path,
                           "workspace": os.path.dirname(os.path.dirname(path)),
                           "recorded": rec, "fields": fields, "sampled": True})
            texts[path] = new_text
        else:
            still_same.append(path)
    sample = list(texts) + still_same
    explained = ninja.explain_many(sample, budget_s=EXPLAIN_BUDGET_S, ninja=nbin,
                                   per_call_s=PER_CALL_S, texts=texts, extra=_extra_key(done))
    by_path = {d["path"]: d["module"] for d in differ}
    out_explained = []
    for e in explained:
        mod = by_path.get(e["module_dir"]) or os.path.basename(e["module_dir"])
        out_explained.append(dict(e, module=mod,
                                  variant="as-now" if e["module_dir"] in texts else "as-is"))
    return {"now": now, "ninja": nbin, "checked": checked, "families": families,
            "threads_sampled": threads_sampled,
            "differ": differ[:MAX_LISTED], "differ_count": len(differ),
            "recorded_toolkits": recorded, "explained": out_explained,
            "budget_s": EXPLAIN_BUDGET_S, "spent_s": round(time.monotonic() - t0, 3)}
