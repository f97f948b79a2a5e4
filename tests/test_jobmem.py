"""The one per-job memory table (``fidoctor/flashinfer/jobmem.py``) and who reads it.

Warmup sizes its pool with it, build-memory-pressure and build-killed size
``MAX_JOBS`` with it: a module must land in the same memory class everywhere.
"""

from __future__ import annotations

import pytest

from fidoctor.flashinfer import jobmem
from fidoctor.warmup.specs import KINDS, ModuleSpec
from tests.conftest import DECODE, FA2, FA3


def test_module_names_map_onto_their_memory_class():
    assert jobmem.mem_class(DECODE) == "decode"
    assert jobmem.mem_class(FA2) == "fa2"
    assert jobmem.mem_class(FA3) == "fa3"
    assert jobmem.mem_class("batch_mla_attention_dtype_q_bf16") == "fa3"  # CUTLASS-heavy
    assert jobmem.mem_class("norm") == "fa2"  # unknown and light: the middle figure
    assert jobmem.job_peak_bytes(FA3) == int(jobmem.GB_PER_JOB["fa3"] * 1e9)
    assert jobmem.job_peak_bytes(DECODE) < jobmem.job_peak_bytes(FA2) < jobmem.job_peak_bytes(FA3)


@pytest.mark.parametrize("kind", KINDS)
def test_warmup_keys_agree_with_warmup_specs(kind):
    spec = ModuleSpec(kind, "bf16", 128)
    assert jobmem.mem_class(spec.key) == spec.mem_class
    assert jobmem.mem_class(spec.expected_name()) == spec.mem_class


def test_fa3_figure_covers_the_h200_measurement():
    """h200-facts.md: an FA3 cicc peaked at ≈2.6 GiB; the table keeps a margin over it."""
    assert jobmem.GB_PER_JOB["fa3"] * 1e9 >= 2.6 * (1 << 30)
