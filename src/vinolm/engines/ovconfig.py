"""OpenVINO properties: vinolm's defaults per device and workload, and user overrides.

Users override anything with ``--ov-config KEY=VALUE``; values are parsed as JSON when
they look like it (numbers, booleans), otherwise kept as strings.
"""

from __future__ import annotations

import json
from typing import Any

from vinolm.cpu import BF16_FLAGS, INT8_DOT_FLAGS, cpu_flags, cpu_kind, isa_cap
from vinolm.errors import InvalidRequest


def parse_ov_config(pairs: list[str] | None, source: str = "--ov-config") -> dict[str, Any]:
    """``["KEY=VALUE", ...]`` -> dict, with a clear error for a malformed pair that names
    where it was written (``source``: the flag, or a bench row's spec)."""
    config: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidRequest(f"{source} takes KEY=VALUE, got {pair!r}")
        try:
            parsed: Any = json.loads(value)
        except ValueError:
            parsed = value
        config[key.strip()] = parsed if isinstance(parsed, (int, float, bool)) else value
    return config


#: vinolm's CPU defaults, measured on the default model in one process, interleaved run by
#: run (``python -m vinolm.bench.interleave``; docs/benchmarks.md, "Tuning"):
#: * an f16 KV cache instead of OpenVINO's u8: 14% less time per token (no per-token
#:   dequantization of the whole history in attention), twice the KV bytes;
#: * dynamic quantization of activations in groups of 64 instead of 32: 11% faster prompts,
#:   decode unchanged (0 switches it off and halves prompt speed); INT4 weights in groups
#:   wider than 64 take wider ones where measured (``layouts.activation_group``).
CPU_DEFAULTS: dict[str, Any] = {"KV_CACHE_PRECISION": "f16", "DYNAMIC_QUANTIZATION_GROUP_SIZE": 64}
#: Inference precision stays OpenVINO's (bf16 where the CPU has it) except on CPUs with AMX:
#: there bf16 token steps were measured 1.7x slower than f32 (61 vs 103 tok/s, 2 threads)
#: while bf16 prompts were 3x faster, and tokens are most of a chat; on AVX512-BF16 without
#: AMX (AMD EPYC) bf16 decodes as fast as f32 and prefills 17% faster, so bf16 stays.
AMX_DEFAULTS: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}


#: Devices that pick or combine real ones (``AUTO:GPU,CPU``...).
VIRTUAL_DEVICES = frozenset({"AUTO", "MULTI", "HETERO"})


def device_base(device: str) -> str:
    """``CPU`` of ``CPU.0``, ``AUTO`` of ``AUTO:GPU,CPU``."""
    return device.split(":", 1)[0].split(".", 1)[0].upper()


def optimization_capabilities(device: str = "CPU") -> list[str]:
    """What OpenVINO says it can compute fast on ``device`` (``BF16``, ``INT8``, ``FP16``...)."""
    import openvino as ov

    return [str(c) for c in ov.Core().get_property(device, "OPTIMIZATION_CAPABILITIES")]


def capped_defaults(flags: set[str]) -> dict[str, Any]:
    """What a CPU whose kernels ``ONEDNN_MAX_CPU_ISA`` caps must be told: OpenVINO's plugin
    still plans for the real CPU's bf16 and int8 dot products, which the capped kernels
    cannot run ("could not create a primitive descriptor"). So f32 math below bf16, and no
    activation quantization below VNNI, as on a CPU that is that old."""
    props: dict[str, Any] = {}
    if not BF16_FLAGS & flags:
        props["INFERENCE_PRECISION_HINT"] = "f32"
    if not INT8_DOT_FLAGS & flags:
        props["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = 0
    return props


def cap_properties() -> dict[str, Any]:
    """The properties without which nothing compiles under this machine's ISA cap (none
    without one): what even a peer run "with OpenVINO's defaults" needs under a cap."""
    return capped_defaults(cpu_flags()) if isa_cap() else {}


def device_defaults(
    device: str, flags: set[str] | None = None, cap: str | None = None, export: dict[str, Any] | None = None
) -> dict[str, Any]:
    """vinolm's defaults for ``device`` (``CPU``, ``CPU.0``...) and the export it compiles
    (its ``vinolm.json``: INT4 weights in wide groups run faster with wider activation
    groups, ``layouts.activation_group``); none for other devices, AUTO included: CPU
    properties under AUTO's ``DEVICE_PROPERTIES`` would silently win over a user's top-level
    ``--ov-config`` hints. ``flags`` and ``cap`` default to this machine's (flags already capped)."""
    from vinolm.export.layouts import activation_group

    if device_base(device) != "CPU":
        return {}
    flags = cpu_flags() if flags is None else flags
    cap = isa_cap() if cap is None else cap
    kind = cpu_kind(flags)
    group = activation_group(kind, export or {}) or 0
    wider = {"DYNAMIC_QUANTIZATION_GROUP_SIZE": group} if group > CPU_DEFAULTS["DYNAMIC_QUANTIZATION_GROUP_SIZE"] else {}
    return {**CPU_DEFAULTS, **(AMX_DEFAULTS if kind == "amx" else {}), **wider,
            **(capped_defaults(flags) if cap else {})}


def layout_mismatch(info: dict[str, Any], device: str, flags: set[str] | None = None) -> str | None:
    """What to tell a user whose export was laid out for another kind of CPU than the one
    it is about to run on, or for this kind by an earlier layout table (its weights decode,
    only slower than they could). Only when the layouts differ: two kinds often lay a format
    out alike, and the user's own choices stand."""
    from vinolm.export.layouts import layout_for

    target = info.get("target_cpu")
    if not device_defaults(device) or target in (None, "any"):
        return None
    kind = cpu_kind(flags)
    here = layout_for(kind, str(info.get("weight_format")))
    for name, origin in info.get("settings_from", {}).items():
        wanted = getattr(here, name, None)
        if origin in ("cpu", "catalog", "default") and (info.get(name) != wanted if wanted is not None
                                                         else origin == "cpu"):
            made_for = f"for {target} CPUs and this CPU is {kind}" if target != kind else \
                f"for {kind} CPUs by an earlier vinolm, whose table chose otherwise"
            return (f"this export's weights are laid out {made_for}: export it again here "
                    "(vinolm export ... --target-cpu auto) for its fastest layout")
    return None


def compile_properties(
    device: str, user: dict[str, Any], cache_dir: str | None, defaults: bool = True,
    export: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What a pipeline is compiled with: the model cache (a second load is faster),
    vinolm's measured defaults for the device and the ``export`` (its ``vinolm.json``;
    without defaults, still what an ISA cap needs), then the user's overrides, which always
    win (under an ISA cap, as that kind's CPU would take them)."""
    props: dict[str, Any] = {}
    if cache_dir:
        props["CACHE_DIR"] = cache_dir
    if defaults:
        props.update(device_defaults(device, export=export))
    capped = isa_cap() is not None and _may_pick_the_cpu(device)
    if capped:  # AUTO passes top-level properties on to the device it picks
        props.update(cap_properties())
    props.update(user)
    if capped:
        props.update(_as_capped_cpu(props, cpu_flags()))
    return props


def _may_pick_the_cpu(device: str) -> bool:
    return device_base(device) in {"CPU", *VIRTUAL_DEVICES}


def _as_capped_cpu(props: dict[str, Any], flags: set[str]) -> dict[str, Any]:
    """A user's bf16 math or activation quantization, as a CPU of the capped kind takes
    them: a real AVX2 CPU's plugin ignores both and computes in f32, while under the cap
    the plugin plans them for the real CPU and the capped kernels cannot compile them. So
    ``ONEDNN_MAX_CPU_ISA`` rehearses the older CPU with any properties (the test suite's)."""
    capped = capped_defaults(flags)
    beyond = {"INFERENCE_PRECISION_HINT": lambda v: v.lower() == "bf16",
              "DYNAMIC_QUANTIZATION_GROUP_SIZE": lambda v: v.strip() not in ("0", "")}
    changes: dict[str, Any] = {}
    for key, value in props.items():
        name = key.removeprefix("PREFILL_")
        if name in capped and beyond[name](str(value)):
            changes[key] = capped[name]
    return changes


def available_devices() -> list[str]:
    import openvino as ov

    return list(ov.Core().available_devices)


def check_device(device: str) -> None:
    """Reject a device OpenVINO does not have before a minute of loading fails on it."""
    base = device_base(device)
    if base in VIRTUAL_DEVICES:
        return
    devices = available_devices()
    if device.upper() not in {d.upper() for d in devices} and base not in {d.split(".")[0] for d in devices}:
        raise InvalidRequest(f"unknown device {device!r}; this machine has {', '.join(devices + ['AUTO'])}")
