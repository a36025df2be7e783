"""What this machine's CPU can do, for the tests whose expectations depend on it.

vinolm's machines change kind between sessions (AVX2 only, AVX-512 with bf16, AMX), and CI
runs on whichever it is: a test that needs a capability asks OpenVINO, as the engines do, and
either skips with the reason or asserts what this CPU must do instead.
"""

from __future__ import annotations

import pytest

from vinolm.cpu import cpu_flags, cpu_kind, isa, isa_cap
from vinolm.engines.ovconfig import optimization_capabilities

CAPABILITIES: list[str] = optimization_capabilities()
#: OpenVINO computes in bf16 (its default inference precision) only where this is true; its
#: capabilities are the real CPU's even when ONEDNN_MAX_CPU_ISA caps the kernels below bf16.
HAS_BF16 = "BF16" in CAPABILITIES and not (
    isa_cap() and not {"avx512_bf16", "amx_bf16", "avx_ne_convert"} & cpu_flags())
KIND = cpu_kind()
#: VNNI in some form: OpenVINO quantizes activations to int8 on the fly only with it (under
#: ONEDNN_MAX_CPU_ISA, the capped set's answer), so a checking pass costs about a step.
HAS_INT8_DOT = bool({"avx_vnni", "avx512_vnni", "amx_int8"} & cpu_flags())
#: What prompt lookup proposes per step here, by docs/benchmarks.md sections 6b and 16.
LOOKUP_PROPOSALS = 5 if HAS_INT8_DOT else 3
#: And a draft model, by section 17.
DRAFT_PROPOSALS = 5 if HAS_INT8_DOT else 2
#: The precision OpenVINO compiles a model with when asked for bf16.
BF16_OR_FALLBACK = "bf16" if HAS_BF16 else "f32"

needs_bf16 = pytest.mark.skipif(
    not HAS_BF16, reason=f"this CPU ({KIND}: {' '.join(isa()) or 'no AVX2'}) has no bf16 arithmetic"
)
