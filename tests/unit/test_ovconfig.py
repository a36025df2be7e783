"""vinolm's OpenVINO defaults: which device and CPU gets what, and that the user wins."""

from __future__ import annotations

from vinolm.engines.ovconfig import AMX_DEFAULTS, CPU_DEFAULTS, compile_properties, device_defaults


def test_cpu_defaults_depend_on_amx() -> None:
    avx512 = {"avx512f", "avx512_bf16", "avx512_vnni"}
    assert device_defaults("CPU", avx512) == CPU_DEFAULTS
    assert "INFERENCE_PRECISION_HINT" not in device_defaults("CPU", avx512)  # bf16 stays where it is fast
    assert device_defaults("CPU", avx512 | {"amx_bf16", "amx_tile"}) == {**CPU_DEFAULTS, **AMX_DEFAULTS}
    assert device_defaults("cpu.0", avx512) == CPU_DEFAULTS
    assert device_defaults("GPU", avx512) == {} and device_defaults("NPU") == {}


def test_user_properties_win_and_defaults_can_be_left_out() -> None:
    props = compile_properties("CPU", {"KV_CACHE_PRECISION": "u8", "NUM_STREAMS": 2}, "/cache")
    assert props["CACHE_DIR"] == "/cache" and props["KV_CACHE_PRECISION"] == "u8" and props["NUM_STREAMS"] == 2
    assert props["DYNAMIC_QUANTIZATION_GROUP_SIZE"] == CPU_DEFAULTS["DYNAMIC_QUANTIZATION_GROUP_SIZE"]
    assert compile_properties("CPU", {"NUM_STREAMS": 1}, None, defaults=False) == {"NUM_STREAMS": 1}
