"""vinolm's OpenVINO defaults: which device and CPU gets what, and that the user wins."""

from __future__ import annotations

from typing import Any

import pytest

from vinolm.cpu import cpu_flags, cpu_kind, isa
from vinolm.engines.ovconfig import (
    AMX_DEFAULTS,
    CPU_DEFAULTS,
    cap_properties,
    compile_properties,
    device_defaults,
    layout_mismatch,
    optimization_capabilities,
)

# Feature flags as /proc/cpuinfo lists them on the kinds of machine vinolm has run on (trimmed
# to the ones that matter): AMD EPYC Zen 3, AMD EPYC Zen 4, Intel Xeon Sapphire Rapids; and an
# Intel client CPU (Alder Lake: AVX-VNNI without AVX-512), rehearsed under ONEDNN_MAX_CPU_ISA.
BASE = {"sse4_2", "avx", "f16c", "fma", "avx2"}
AVX2_ONLY = BASE
AVX2_VNNI = BASE | {"avx_vnni"}
AVX512_BF16 = BASE | {"avx512f", "avx512dq", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16"}
AVX512_PLAIN = BASE | {"avx512f", "avx512dq", "avx512bw", "avx512vl"}  # Skylake-SP: no bf16, no VNNI
AMX = AVX512_BF16 | {"avx512_fp16", "amx_tile", "amx_bf16", "amx_int8"}


@pytest.mark.parametrize(
    ("flags", "kind", "named"),
    [
        (AVX2_ONLY, "avx2", ["AVX2"]),
        (AVX2_VNNI, "avx2-vnni", ["AVX2", "AVX-VNNI"]),
        (AVX512_PLAIN, "avx512", ["AVX2", "AVX-512F"]),
        (AVX512_BF16, "avx512-bf16", ["AVX2", "AVX-512F", "AVX512_VNNI", "AVX512_BF16"]),
        (AMX, "amx", ["AVX2", "AVX-512F", "AVX512_VNNI", "AVX512_BF16", "AVX512_FP16", "AMX", "AMX_BF16", "AMX_INT8"]),
        ({"sse4_2"}, "other", []),
    ],
    ids=["avx2", "avx2-vnni", "avx512", "avx512-bf16", "amx", "sse"],
)
def test_cpu_kind_and_isa_per_machine_kind(flags: set[str], kind: str, named: list[str]) -> None:
    assert cpu_kind(flags) == kind
    assert isa(flags) == named


@pytest.mark.parametrize("flags", [AVX2_ONLY, AVX2_VNNI, AVX512_PLAIN, AVX512_BF16],
                         ids=["avx2", "avx2-vnni", "avx512", "avx512-bf16"])
def test_cpu_defaults_without_amx_leave_precision_to_openvino(flags: set[str]) -> None:
    """bf16 stays where OpenVINO picks it (fast on AVX512_BF16); f32 is what it picks elsewhere."""
    assert device_defaults("CPU", flags, cap="") == CPU_DEFAULTS
    assert "INFERENCE_PRECISION_HINT" not in device_defaults("CPU", flags, cap="")


def test_cpu_defaults_with_amx_decode_in_f32() -> None:
    assert device_defaults("CPU", AMX, cap="") == {**CPU_DEFAULTS, **AMX_DEFAULTS}
    assert device_defaults("cpu.0", AVX512_BF16, cap="") == CPU_DEFAULTS
    assert device_defaults("GPU", AMX) == {} and device_defaults("NPU") == {}


def test_an_int4_export_in_wide_groups_gets_wider_activation_groups_under_the_users_choice() -> None:
    cw = {"weight_format": "int4", "layers": {"int4 channel-wise": 154, "int8 channel-wise": 2}}
    g64 = {"weight_format": "int4", "layers": {"int4 g64": 139, "int8 channel-wise": 72}}
    assert device_defaults("CPU", AVX512_BF16, cap="", export=cw) == {**CPU_DEFAULTS,
                                                                      "DYNAMIC_QUANTIZATION_GROUP_SIZE": 256}
    assert device_defaults("CPU", AVX512_BF16, cap="", export=g64) == CPU_DEFAULTS
    assert device_defaults("CPU", AMX, cap="", export=cw) == {**CPU_DEFAULTS, **AMX_DEFAULTS,
                                                              "DYNAMIC_QUANTIZATION_GROUP_SIZE": 128}
    # AVX-VNNI quantizes activations as AVX-512 VNNI does; AVX2 alone does not quantize them at all.
    assert device_defaults("CPU", AVX2_VNNI, cap="", export=cw)["DYNAMIC_QUANTIZATION_GROUP_SIZE"] == 256
    assert device_defaults("CPU", AVX2_ONLY, cap="", export=cw) == CPU_DEFAULTS
    assert device_defaults("GPU", AVX512_BF16, export=cw) == {}
    # Capped below VNNI, activation quantization is off whatever the layout asks.
    assert device_defaults("CPU", AVX2_ONLY, cap="AVX2", export=cw)["DYNAMIC_QUANTIZATION_GROUP_SIZE"] == 0
    if cpu_kind() in ("avx512-bf16", "avx512", "avx2-vnni"):
        props = compile_properties("CPU", {"DYNAMIC_QUANTIZATION_GROUP_SIZE": 32}, None, export=cw)
        assert props["DYNAMIC_QUANTIZATION_GROUP_SIZE"] == 32
        assert compile_properties("CPU", {}, None, export=cw)["DYNAMIC_QUANTIZATION_GROUP_SIZE"] == 256
        assert "DYNAMIC_QUANTIZATION_GROUP_SIZE" not in compile_properties("CPU", {}, None, False, cw)


def test_a_capped_cpu_is_the_older_kind_and_gets_defaults_that_compile_there() -> None:
    from vinolm.cpu import capped
    from vinolm.engines.ovconfig import capped_defaults

    assert capped(AMX, "AVX2") == AVX2_ONLY and cpu_kind(capped(AMX, "avx2")) == "avx2"
    assert cpu_kind(capped(AVX512_BF16, "AVX512_CORE_VNNI")) == "avx512"
    assert capped(AMX | {"avx_vnni"}, "AVX2_VNNI") == AVX2_VNNI and cpu_kind(capped(AMX, "AVX2_VNNI")) == "avx2"
    assert capped(AVX512_BF16, None) == capped(AVX512_BF16, "AVX1024") == AVX512_BF16  # no cap, or an unknown one
    # The plugin plans for the real CPU's bf16 and VNNI, which capped kernels cannot run.
    assert capped_defaults(AVX2_ONLY) == {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0}
    assert capped_defaults(AVX2_VNNI) == {"INFERENCE_PRECISION_HINT": "f32"}  # its int8 dot products compile
    assert capped_defaults(capped(AVX512_BF16, "AVX512_CORE_VNNI")) == {"INFERENCE_PRECISION_HINT": "f32"}
    assert capped_defaults(AMX) == {}
    assert device_defaults("CPU", AVX2_ONLY, cap="AVX2")["DYNAMIC_QUANTIZATION_GROUP_SIZE"] == 0
    assert device_defaults("CPU", AVX2_ONLY, cap="") == CPU_DEFAULTS  # a real AVX2 CPU: the plugin decides


def test_this_machine_agrees_with_openvino() -> None:
    """OpenVINO computes bf16 where the CPU has bf16 instructions; tests that need bf16 ask
    OpenVINO (tests/cpu.py), so this checks the two views of the CPU agree (OpenVINO's
    capabilities are the real CPU's, whatever ONEDNN_MAX_CPU_ISA caps)."""
    kind = cpu_kind(cpu_flags(obey_cap=False))
    capabilities = optimization_capabilities()
    assert "FP32" in capabilities
    if kind in ("avx512-bf16", "amx"):
        assert "BF16" in capabilities, (kind, capabilities, isa())
    elif "BF16" in capabilities:  # newer AVX2 cores convert bf16 without AVX-512 (AVX-NE-CONVERT)
        assert "avx_ne_convert" in cpu_flags(obey_cap=False), (kind, capabilities, isa())
    assert cpu_flags(), "no /proc/cpuinfo flags on this Linux machine"


def test_user_properties_win_and_defaults_can_be_left_out() -> None:
    props = compile_properties("CPU", {"KV_CACHE_PRECISION": "u8", "NUM_STREAMS": 2}, "/cache")
    assert props["CACHE_DIR"] == "/cache" and props["KV_CACHE_PRECISION"] == "u8" and props["NUM_STREAMS"] == 2
    assert props["DYNAMIC_QUANTIZATION_GROUP_SIZE"] == device_defaults("CPU")["DYNAMIC_QUANTIZATION_GROUP_SIZE"]
    assert compile_properties("CPU", {"NUM_STREAMS": 1}, None, defaults=False) == {**cap_properties(), "NUM_STREAMS": 1}


def test_under_an_isa_cap_every_property_set_gets_what_compiles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    needed = {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0}
    assert cap_properties() == needed and cpu_kind() == "avx2"
    assert compile_properties("CPU", {"NUM_STREAMS": 1}, None, defaults=False) == {**needed, "NUM_STREAMS": 1}
    # What the user asks beyond the capped kind is taken as that kind's real CPU takes it (f32,
    # no activation groups); the rest of the user's properties win as always.
    user = {"INFERENCE_PRECISION_HINT": "bf16", "PREFILL_INFERENCE_PRECISION_HINT": "bf16",
            "DYNAMIC_QUANTIZATION_GROUP_SIZE": "32", "KV_CACHE_PRECISION": "u8"}
    assert compile_properties("CPU", user, None) == {**needed, "PREFILL_INFERENCE_PRECISION_HINT": "f32",
                                                     "KV_CACHE_PRECISION": "u8"}
    assert compile_properties("GPU", user, None) == user
    assert compile_properties("AUTO", {}, None) == needed  # AUTO may pick the capped CPU
    assert compile_properties("GPU", {}, None, defaults=False) == {}
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "ALL")  # oneDNN's "no cap"
    assert cap_properties() == {}


def test_an_export_laid_out_for_another_cpu_kind_is_named_where_the_layouts_differ() -> None:
    from vinolm.export import ExportOptions

    def made_for(kind: str, fmt: str, sym: bool | None = None, fuse: bool | None = None) -> dict[str, Any]:
        return ExportOptions(weight_format=fmt, target_cpu=kind, sym=sym, fuse=fuse).with_defaults(None).compression()

    avx2_int4 = made_for("avx2", "int4")  # symmetric and fused, chosen for AVX2
    assert layout_mismatch(avx2_int4, "CPU", AMX) is None  # AMX lays INT4 out alike
    assert layout_mismatch(avx2_int4, "CPU", AVX2_ONLY) is None  # where it was meant to run
    assert layout_mismatch(avx2_int4, "GPU", AMX) is None  # not a CPU layout question
    # AVX-512 lays INT4 out as AVX2 does: its wider activation groups are a compile property
    assert layout_mismatch(avx2_int4, "CPU", AVX512_BF16) is None
    grouped = made_for("avx2", "int4") | {"group_size": 32, "settings_from": {"sym": "cpu", "group_size": "cpu"}}
    note = layout_mismatch(grouped, "CPU", AVX2_ONLY)  # made by the AVX2 row before 2026-12-05
    assert note is not None and "for avx2 CPUs by an earlier vinolm" in note
    int8 = made_for("avx512-bf16", "int8", fuse=False)  # NNCF's asymmetric INT8
    note = layout_mismatch(int8, "CPU", AMX)  # AMX wants it symmetric
    assert note is not None and "laid out for avx512-bf16 CPUs and this CPU is amx" in note
    assert layout_mismatch(int8, "CPU", AVX2_ONLY) is not None  # AVX2 wants symmetric INT8
    assert layout_mismatch(made_for("avx512-bf16", "int8", sym=False, fuse=False), "CPU", AVX2_ONLY) is None
    assert layout_mismatch(made_for("avx512-bf16", "int8"), "CPU", AMX) is not None
    assert layout_mismatch(made_for("amx", "int8"), "CPU", AVX512_BF16) is not None  # symmetric: AMX's choice
    assert layout_mismatch({"target_cpu": "any"}, "CPU", AMX) is None  # made for no kind in particular
    assert layout_mismatch({"weight_format": "int8"}, "CPU", AMX) is None  # exported before layouts
