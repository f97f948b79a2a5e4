"""The modules warmup compiles: short specs, the default set, and their names.

A short spec is ``KIND[:DTYPE[:HEAD_DIM]]`` — e.g. ``decode``, ``prefill-fa3:f16``,
``single-decode:f16:64`` — or a full FlashInfer module name that parses into
one (``batch_decode_with_kv_cache_dtype_q_bf16_…``). KINDs map onto FlashInfer's
generators (flashinfer/jit/attention/modules.py, 0.2.6+):

  decode          gen_batch_decode_module(q, kv, o, idx=i32, hd, hd, 0, False, False)
  prefill-fa2/3   gen_batch_prefill_module(backend, q, kv, o, idx=i32, hd, hd, 0, False, False, False)
  single-decode   gen_single_decode_module(q, kv, o, hd, hd, 0, False, False)
  single-prefill-fa2/3  gen_single_prefill_module(backend, q, kv, o, hd, hd, 0, False, False, False)

The default set is what serving stacks (SGLang/vLLM with the FlashInfer
backend) build first: paged decode and paged prefill, FA2 everywhere and FA3
when the arch list holds sm90, bf16 and f16, head dim 128. Head counts (32 q /
8 kv) are runtime arguments, not part of the module, so "prefill short and
medium" of the seeds' script is the same module; warmup compiles it once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional

from fidoctor.errors import FidoctorError
from fidoctor.flashinfer.modnames import parse_module_name

KINDS = ("decode", "prefill-fa2", "prefill-fa3", "single-decode", "single-prefill-fa2",
         "single-prefill-fa3")
DTYPES = ("bf16", "f16")
DEFAULT_HEAD_DIM = 128
# Hard per-module timeouts (s): generous on purpose, the stall detector is
# what ends hangs early; this bounds a compile that is busy but endless.
DEFAULT_TIMEOUT = {"decode": 900, "fa2": 1800, "fa3": 3600}
_NAME_KIND = {"batch_decode": "decode", "single_decode": "single-decode",
              "batch_prefill": "prefill", "single_prefill": "single-prefill"}


@dataclass(frozen=True)
class ModuleSpec:
    kind: str        # one of KINDS
    dtype: str       # bf16 | f16 (q, kv and o alike)
    head_dim: int

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.dtype}:{self.head_dim}"

    @property
    def backend(self) -> Optional[str]:
        return self.kind.rsplit("-", 1)[1] if "prefill" in self.kind else None

    @property
    def is_sm90(self) -> bool:
        return self.backend == "fa3"

    @property
    def mem_class(self) -> str:
        return self.backend or "decode"

    @property
    def default_timeout(self) -> int:
        return DEFAULT_TIMEOUT[self.mem_class]

    def expected_name(self) -> str:
        """The module name FlashInfer 0.2.6–0.7 gives it (the child reports the real one)."""
        dt = f"dtype_q_{self.dtype}_dtype_kv_{self.dtype}_dtype_o_{self.dtype}_"
        idx = "" if self.kind.startswith("single") else "dtype_idx_i32_"
        hd = f"head_dim_qk_{self.head_dim}_head_dim_vo_{self.head_dim}_"
        tail = "posenc_0_use_swa_False_use_logits_cap_False"
        stem = "single" if self.kind.startswith("single") else "batch"
        if "decode" in self.kind:
            return f"{stem}_decode_with_kv_cache_{dt}{idx}{hd}{tail}"
        sm90 = "_sm90" if self.is_sm90 else ""
        return f"{stem}_prefill_with_kv_cache_{dt}{idx}{hd}{tail}_f16qk_False{sm90}"

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d.update(key=self.key, backend=self.backend, expected_name=self.expected_name())
        return d


def default_set(sm90: bool) -> List[ModuleSpec]:
    kinds = ["decode", "prefill-fa2"] + (["prefill-fa3"] if sm90 else [])
    return [ModuleSpec(k, dt, DEFAULT_HEAD_DIM) for dt in DTYPES for k in kinds]


def parse_spec(text: str) -> ModuleSpec:
    """``KIND[:DTYPE[:HEAD_DIM]]`` or a full module name → ModuleSpec (FidoctorError if bad)."""
    text = text.strip()
    if "_with_kv_cache_" in text:
        return _from_name(text)
    parts = text.split(":")
    kind = parts[0]
    if kind in ("prefill", "single-prefill"):
        kind += "-fa2"
    if kind not in KINDS or len(parts) > 3:
        raise FidoctorError(f"--modules {text!r}: unknown module spec",
                            f"use KIND[:DTYPE[:HEAD_DIM]] with KIND one of {', '.join(KINDS)}, "
                            "DTYPE bf16|f16, or a full FlashInfer module name")
    dtype = parts[1] if len(parts) > 1 and parts[1] else "bf16"
    if dtype not in DTYPES:
        raise FidoctorError(f"--modules {text!r}: dtype must be bf16 or f16")
    try:
        hd = int(parts[2]) if len(parts) > 2 else DEFAULT_HEAD_DIM
    except ValueError:
        raise FidoctorError(f"--modules {text!r}: head dim must be a number") from None
    if hd not in (64, 128, 256):
        raise FidoctorError(f"--modules {text!r}: head dim must be 64, 128 or 256")
    return ModuleSpec(kind, dtype, hd)


def _from_name(name: str) -> ModuleSpec:
    info = parse_module_name(name)
    base = _NAME_KIND.get(info.get("kind", ""))
    dt = info.get("dtype_q")
    if not base or dt not in DTYPES or info.get("dtype_kv") != dt or info.get("dtype_o") != dt \
            or "posenc_0_use_swa_False_use_logits_cap_False" not in name:
        raise FidoctorError(f"--modules {name[:80]}…: warmup cannot build this module",
                            "it builds plain (no swa/softcap/posenc) decode/prefill modules "
                            "with one dtype; use a short spec such as decode:bf16:128")
    kind = base if "decode" in base else f"{base}-{info.get('backend') or 'fa2'}"
    spec = ModuleSpec(kind, dt, int(info.get("head_dim_qk") or DEFAULT_HEAD_DIM))
    if spec.expected_name() != name:
        raise FidoctorError(f"--modules {name[:80]}…: not a module warmup can build",
                            f"closest: {spec.key}")
    return spec


def select(modules: Optional[str], sm90: bool, disable_sm90: bool) -> List[ModuleSpec]:
    """The set to build: defaults, or ``--modules`` (``+spec`` entries add to the defaults)."""
    chosen: List[ModuleSpec] = []
    items = [m for m in (modules or "").split(",") if m.strip()]
    if not items or all(m.strip().startswith("+") for m in items):
        chosen = default_set(sm90)
    for m in items:
        s = parse_spec(m.strip().lstrip("+"))
        if s not in chosen:
            chosen.append(s)
    if disable_sm90:
        chosen = [s for s in chosen if not s.is_sm90]
    return chosen
