"""vinolm's OpenVINO defaults: which device and CPU gets what, and that the user wins."""

from __future__ import annotations

from typing import Any

import pytest

from vinolm.cpu import cpu_flags, cpu_kind, isa
from vinolm.engines.ovconfig import (
    AMX_DEFAULTS,
    CPU_DEFAULTS,
    compile_properties,
    device_defaults,
    layout_mismatch,
    optimization_capabilities,
)

# Feature flags as /proc/cpuinfo lists them on the three kinds of machine vinolm has run on
# (trimmed to the ones that matter): AMD EPYC Zen 3, AMD EPYC Zen 4, Intel Xeon Sapphire Rapids.
BASE = {"sse4_2", "avx", "f16c", "fma", "avx2"}
AVX2_ONLY = BASE
AVX512_BF16 = BASE | {"avx512f", "avx512dq", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16"}
AVX512_PLAIN = BASE | {"avx512f", "avx512dq", "avx512bw", "avx512vl"}  # Skylake-SP: no bf16, no VNNI
AMX = AVX512_BF16 | {"avx512_fp16", "amx_tile", "amx_bf16", "amx_int8"}


@pytest.mark.parametrize(
    ("flags", "kind", "named"),
    [
        (AVX2_ONLY, "avx2", ["AVX2"]),
        (AVX512_PLAIN, "avx512", ["AVX2", "AVX-512F"]),
        (AVX512_BF16, "avx512-bf16", ["AVX2", "AVX-512F", "AVX512_VNNI", "AVX512_BF16"]),
        (AMX, "amx", ["AVX2", "AVX-512F", "AVX512_VNNI", "AVX512_BF16", "AVX512_FP16", "AMX", "AMX_BF16", "AMX_INT8"]),
        ({"sse4_2"}, "other", []),
    ],
    ids=["avx2", "avx512", "avx512-bf16", "amx", "sse"],
)
def test_cpu_kind_and_isa_per_machine_kind(flags: set[str], kind: str, named: list[str]) -> None:
    assert cpu_kind(flags) == kind
    assert isa(flags) == named


@pytest.mark.parametrize("flags", [AVX2_ONLY, AVX512_PLAIN, AVX512_BF16], ids=["avx2", "avx512", "avx512-bf16"])
def test_cpu_defaults_without_amx_leave_precision_to_openvino(flags: set[str]) -> None:
    """bf16 stays where OpenVINO picks it (fast on AVX512_BF16); f32 is what it picks elsewhere."""
    assert device_defaults("CPU", flags) == CPU_DEFAULTS
    assert "INFERENCE_PRECISION_HINT" not in device_defaults("CPU", flags)


def test_cpu_defaults_with_amx_decode_in_f32() -> None:
    assert device_defaults("CPU", AMX) == {**CPU_DEFAULTS, **AMX_DEFAULTS}
    assert device_defaults("cpu.0", AVX512_BF16) == CPU_DEFAULTS
    assert device_defaults("GPU", AMX) == {} and device_defaults("NPU") == {}


def test_this_machine_agrees_with_openvino() -> None:
    """OpenVINO computes bf16 where the CPU has bf16 instructions; tests that need bf16 ask
    OpenVINO (tests/cpu.py), so this checks the two views of the CPU agree."""
    kind = cpu_kind()
    capabilities = optimization_capabilities()
    assert "FP32" in capabilities
    if kind in ("avx512-bf16", "amx"):
        assert "BF16" in capabilities, (kind, capabilities, isa())
    elif "BF16" in capabilities:  # newer AVX2 cores convert bf16 without AVX-512 (AVX-NE-CONVERT)
        assert "avx_ne_convert" in cpu_flags(), (kind, capabilities, isa())
    assert cpu_flags(), "no /proc/cpuinfo flags on this Linux machine"


def test_user_properties_win_and_defaults_can_be_left_out() -> None:
    props = compile_properties("CPU", {"KV_CACHE_PRECISION": "u8", "NUM_STREAMS": 2}, "/cache")
    assert props["CACHE_DIR"] == "/cache" and props["KV_CACHE_PRECISION"] == "u8" and props["NUM_STREAMS"] == 2
    assert props["DYNAMIC_QUANTIZATION_GROUP_SIZE"] == CPU_DEFAULTS["DYNAMIC_QUANTIZATION_GROUP_SIZE"]
    assert compile_properties("CPU", {"NUM_STREAMS": 1}, None, defaults=False) == {"NUM_STREAMS": 1}


def test_an_export_laid_out_for_another_cpu_kind_is_named_where_the_layouts_differ() -> None:
    from vinolm.export import ExportOptions

    def made_for(kind: str, fmt: str, sym: bool | None = None) -> dict[str, Any]:
        return ExportOptions(weight_format=fmt, target_cpu=kind, sym=sym).with_defaults(None).compression()

    avx2_int4 = made_for("avx2", "int4")  # symmetric groups of 32, chosen for AVX2
    note = layout_mismatch(avx2_int4, "CPU", AVX512_BF16)
    assert note is not None and "laid out for avx2 CPUs and this CPU is avx512-bf16" in note
    assert layout_mismatch(avx2_int4, "CPU", AVX2_ONLY) is None  # where it was meant to run
    assert layout_mismatch(avx2_int4, "GPU", AVX512_BF16) is None  # not a CPU layout question
    int8 = made_for("avx512-bf16", "int8")  # NNCF's asymmetric INT8: AMX lays INT8 out alike
    assert layout_mismatch(int8, "CPU", AMX) is None
    assert layout_mismatch(int8, "CPU", AVX2_ONLY) is not None  # AVX2 wants symmetric INT8
    assert layout_mismatch(made_for("avx512-bf16", "int8", sym=False), "CPU", AVX2_ONLY) is None  # the user's --asym
    assert layout_mismatch({"target_cpu": "any"}, "CPU", AMX) is None  # made for no kind in particular
    assert layout_mismatch({"weight_format": "int8"}, "CPU", AMX) is None  # exported before layouts
