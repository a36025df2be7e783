"""Which x86 CPU this is, in the terms vinolm's defaults tell apart.

A bottom module (no OpenVINO import): compile properties (``engines.ovconfig``), export
layouts (``export.layouts``), the bench's machine record and the tests all ask it.
"""

from __future__ import annotations

from typing import Literal


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


#: The x86 features that decide which kernels OpenVINO (and llama.cpp) run, by their
#: ``/proc/cpuinfo`` names, in the order a reader wants them.
ISA_FLAGS: dict[str, str] = {
    "avx2": "AVX2", "avx_vnni": "AVX-VNNI", "avx512f": "AVX-512F", "avx512_vnni": "AVX512_VNNI",
    "avx512_bf16": "AVX512_BF16", "avx512_fp16": "AVX512_FP16", "amx_tile": "AMX", "amx_bf16": "AMX_BF16",
    "amx_int8": "AMX_INT8", "amx_fp16": "AMX_FP16",
}
CpuKind = Literal["amx", "avx512-bf16", "avx512", "avx2", "other"]


def isa(flags: set[str] | None = None) -> list[str]:
    """The CPU's ISA features worth naming next to a number, e.g. ``["AVX2", "AVX-512F", ...]``."""
    flags = cpu_flags() if flags is None else flags
    return [name for flag, name in ISA_FLAGS.items() if flag in flags]


def cpu_kind(flags: set[str] | None = None) -> CpuKind:
    """The kinds of x86 CPU vinolm's defaults and tests tell apart."""
    flags = cpu_flags() if flags is None else flags
    if "amx_bf16" in flags:
        return "amx"
    if "avx512f" in flags:
        return "avx512-bf16" if "avx512_bf16" in flags else "avx512"
    return "avx2" if "avx2" in flags else "other"
