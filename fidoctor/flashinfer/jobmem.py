"""Peak host memory of one FlashInfer compile job (one nvcc edge): the one table.

Why one table: warmup sizes its job pool with it, ``build-memory-pressure``
predicts a live build's need with it and ``build-killed`` sizes ``MAX_JOBS``
after an OOM kill with it. Three copies drifted apart (3.5 GiB per FA3 job in
two probes, 3.1 GB in warmup); a figure measured anew goes here, once.

Measured: an FA3 (sm90) job peaked at ≈2.6 GiB in cicc on the H200
(knowledge/h200-facts.md, batch prefill hd128); on the 2-core CPU box the
hd-64 single-prefill FA3 module's cicc reached 3.4 GB, a decode job ≈0.46 GB
(knowledge/real-builds-on-cpu.md). FA2 prefill lies between. FA3 keeps a
≈10 % margin over the H200 figure. A probe that sees a larger compiler RSS
live takes that instead.
"""

from __future__ import annotations

import re
from typing import Dict

from fidoctor.flashinfer.eta import kind_of

GB = 10**9
# GB (10^9 bytes) per compile job, by memory class (warmup's ``ModuleSpec.mem_class``).
GB_PER_JOB: Dict[str, float] = {"decode": 0.5, "fa2": 1.0, "fa3": 3.1}
# Modules outside the attention kinds above that compile CUTLASS/sm90+ kernels: as heavy as FA3.
HEAVY = re.compile(r"(_sm9\d|_sm1\d\d|sm90|sm100|cutlass|moe|gemm|fmha|mla)", re.I)


def mem_class(name_or_kind: str) -> str:
    """``decode`` | ``fa2`` | ``fa3`` for a module name, a warmup key or an ETA kind.

    Unknown modules: ``fa3`` when the name looks CUTLASS/sm90-heavy, else ``fa2``.
    """
    kind = kind_of(name_or_kind)
    if kind.endswith("decode"):
        return "decode"
    if kind.endswith(("-fa2", "-fa3")):
        return kind[-3:]
    return "fa3" if HEAVY.search(name_or_kind) else "fa2"


def job_peak_bytes(name_or_kind: str) -> int:
    """Peak bytes of one compile job of this module (see ``mem_class``)."""
    return int(GB_PER_JOB[mem_class(name_or_kind)] * GB)
