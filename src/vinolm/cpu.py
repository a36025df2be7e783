"""Which x86 CPU this is, in the terms vinolm's defaults tell apart.

A bottom module (no OpenVINO import): compile properties (``engines.ovconfig``), export
layouts (``export.layouts``), the bench's machine record and the tests all ask it.
"""

from __future__ import annotations

import os
from typing import Literal

#: oneDNN's ``ONEDNN_MAX_CPU_ISA`` values, oldest first, with the ``/proc/cpuinfo`` flags
#: each adds. OpenVINO's CPU kernels obey the cap, so vinolm sees a capped CPU as the older
#: kind it acts as (its defaults must compile there: docs/benchmarks.md section 12).
ONEDNN_ISAS: dict[str, frozenset[str]] = {
    "SSE41": frozenset({"sse4_1", "sse4_2"}),
    "AVX": frozenset({"avx", "f16c", "fma"}),
    "AVX2": frozenset({"avx2"}),
    "AVX2_VNNI": frozenset({"avx_vnni"}),
    "AVX2_VNNI_2": frozenset({"avx_vnni_int8", "avx_ne_convert"}),
    "AVX512_CORE": frozenset({"avx512f", "avx512dq", "avx512bw", "avx512vl", "avx512cd"}),
    "AVX512_CORE_VNNI": frozenset({"avx512_vnni"}),
    "AVX512_CORE_BF16": frozenset({"avx512_bf16"}),
    "AVX512_CORE_FP16": frozenset({"avx512_fp16"}),
    "AVX512_CORE_AMX": frozenset({"amx_tile", "amx_bf16", "amx_int8"}),
    "AVX512_CORE_AMX_FP16": frozenset({"amx_fp16"}),
}
ISA_CAP_ENV = "ONEDNN_MAX_CPU_ISA"


def cpu_flags(obey_cap: bool = True) -> set[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``; empty elsewhere), without those
    above ``ONEDNN_MAX_CPU_ISA`` when that caps OpenVINO's kernels (``obey_cap``)."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return capped(flags, isa_cap()) if obey_cap else flags


def capped(flags: set[str], cap: str | None) -> set[str]:
    """``flags`` without the ones the ISAs after ``cap`` add (unknown or no cap: all)."""
    names = list(ONEDNN_ISAS)
    cap = (cap or "").upper()
    if cap not in ONEDNN_ISAS:
        return flags
    above = set().union(*(ONEDNN_ISAS[name] for name in names[names.index(cap) + 1 :]))
    return flags - above


def isa_cap() -> str | None:
    """The ``ONEDNN_MAX_CPU_ISA`` in force, if it names an ISA."""
    cap = os.environ.get(ISA_CAP_ENV, "").upper()
    return cap if cap in ONEDNN_ISAS else None


#: The x86 features that decide which kernels OpenVINO (and llama.cpp) run, by their
#: ``/proc/cpuinfo`` names, in the order a reader wants them.
ISA_FLAGS: dict[str, str] = {
    "avx2": "AVX2", "avx_vnni": "AVX-VNNI", "avx512f": "AVX-512F", "avx512_vnni": "AVX512_VNNI",
    "avx512_bf16": "AVX512_BF16", "avx512_fp16": "AVX512_FP16", "amx_tile": "AMX", "amx_bf16": "AMX_BF16",
    "amx_int8": "AMX_INT8", "amx_fp16": "AMX_FP16",
}
CpuKind = Literal["amx", "avx512-bf16", "avx512", "avx2-vnni", "avx2", "other"]
#: Flags whose kernels OpenVINO's CPU plugin computes in bf16, and multiplies 8-bit integers
#: with (VNNI: what quantizing activations on the fly, ``DYNAMIC_QUANTIZATION_GROUP_SIZE``,
#: needs). Without either it computes in f32 whatever it is told (docs/benchmarks.md 12, 16).
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
INT8_DOT_FLAGS = frozenset({"avx_vnni", "avx512_vnni", "amx_int8"})


def isa(flags: set[str] | None = None) -> list[str]:
    """The CPU's ISA features worth naming next to a number, e.g. ``["AVX2", "AVX-512F", ...]``."""
    flags = cpu_flags() if flags is None else flags
    return [name for flag, name in ISA_FLAGS.items() if flag in flags]


def cpu_kind(flags: set[str] | None = None) -> CpuKind:
    """The kinds of x86 CPU vinolm's defaults and tests tell apart. AVX-VNNI without AVX-512
    (Intel's client CPUs since Alder Lake) is a kind of its own: there OpenVINO quantizes
    activations on the fly, which decodes 1.7-1.9x faster than the f32 math of AVX2 alone and
    wants other compile properties (docs/benchmarks.md section 19)."""
    flags = cpu_flags() if flags is None else flags
    if "amx_bf16" in flags:
        return "amx"
    if "avx512f" in flags:
        return "avx512-bf16" if "avx512_bf16" in flags else "avx512"
    if "avx2" not in flags:
        return "other"
    return "avx2-vnni" if "avx_vnni" in flags else "avx2"


def memory_gb() -> float:
    """This machine's physical memory in GiB (openvino-genai's ceiling for a KV cache)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
