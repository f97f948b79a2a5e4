"""Parse FlashInfer JIT module names (``get_*_uri``) into their parts.

``single_prefill_with_kv_cache_dtype_q_bf16_…_f16qk_False_sm90`` → kind
``single_prefill``, dtypes, head dims, backend ``fa3``. The ``_sm90`` suffix
(``__sm90`` for attention-sink modules) means the FA3 backend, compiled for
sm_90a only; these are the modules that need TMA and, with newer nvcc,
``cudaGetDriverEntryPointByVersion``.
"""

from __future__ import annotations

import re
from typing import Any, Dict

KINDS = (
    ("batch_prefill_with_attention_sink_kv_cache", "batch_prefill_attention_sink"),
    ("batch_decode_mla_with_kv_cache", "batch_decode_mla"),
    ("single_decode_with_kv_cache", "single_decode"),
    ("batch_decode_with_kv_cache", "batch_decode"),
    ("single_prefill_with_kv_cache", "single_prefill"),
    ("batch_prefill_with_kv_cache", "batch_prefill"),
    ("batch_mla_attention", "batch_mla"),
    ("batch_attention_with_kv_cache", "batch_attention"),
    ("pod_with_kv_cache", "pod"),
)
DTYPE = r"(fp4x2_e2m1|fp4_e2m1|bf16|f16|f32|e4m3|e5m2|i8|u8|i32|u32|i64|u64)"
_FIELDS = {
    "dtype_q": re.compile(r"_dtype_q_" + DTYPE),
    "dtype_kv": re.compile(r"_dtype_kv_" + DTYPE),
    "dtype_o": re.compile(r"_dtype_o_" + DTYPE),
    "dtype_idx": re.compile(r"_dtype_idx_" + DTYPE),
}
_INTS = {
    "head_dim_qk": re.compile(r"_head_dim_qk_(\d+)"),
    "head_dim_vo": re.compile(r"_head_dim_vo_(\d+)"),
    "head_dim_ckv": re.compile(r"_head_dim_ckv_(\d+)"),
    "head_dim_kpe": re.compile(r"_head_dim_kpe_(\d+)"),
    "posenc": re.compile(r"_posenc_(\d+)"),
}


def parse_module_name(name: str) -> Dict[str, Any]:
    """Split a module name into kind/dtypes/head dims/backend; unknown names stay whole."""
    info: Dict[str, Any] = {"name": name, "kind": "other", "backend": None}
    for prefix, kind in KINDS:
        if name.startswith(prefix):
            info["kind"] = kind
            if "decode" not in kind:  # decode kernels have no FA2/FA3 choice
                info["backend"] = "fa3" if is_sm90_module(name) else "fa2"
            break
    else:
        if name.endswith(("_sm90", "_sm90a")) or "sm90" in name:
            info["backend"] = "sm90"
    for key, rx in _FIELDS.items():
        m = rx.search(name)
        if m:
            info[key] = m.group(1)
    for key, rx in _INTS.items():
        m = rx.search(name)
        if m:
            info[key] = int(m.group(1))
    return info


def is_sm90_module(name: str) -> bool:
    """FA3/Hopper modules: ``…_sm90`` (``…__sm90`` for attention-sink) or sm90 GEMMs."""
    return name.endswith("_sm90") or name.endswith("_sm90a") or "_sm90_" in name \
        or name.startswith("gemm_sm90") or name.endswith("_90")


def short_name(name: str, width: int = 60) -> str:
    """A readable label for titles, e.g. ``single_prefill (bf16, hd128, FA3)``.

    The full name stays in evidence; a name we cannot parse is cut to ``width``.
    """
    info = parse_module_name(name)
    if info["kind"] == "other":
        return name if len(name) <= width else name[: width - 1] + "…"
    bits = []
    if "dtype_q" in info:
        kv = info.get("dtype_kv")
        bits.append(info["dtype_q"] + (f"/{kv}" if kv and kv != info["dtype_q"] else ""))
    if "head_dim_qk" in info:
        vo = info.get("head_dim_vo")
        bits.append(f"hd{info['head_dim_qk']}" + (f"/{vo}" if vo and vo != info["head_dim_qk"] else ""))
    if "head_dim_ckv" in info:
        bits.append(f"ckv{info['head_dim_ckv']}")
    if info.get("backend"):
        bits.append(info["backend"].upper())
    flags = [f for f in ("use_swa_True", "use_logits_cap_True") if f in name]
    bits += [f.replace("_True", "") for f in flags]
    return f"{info['kind']} ({', '.join(bits)})" if bits else info["kind"]
