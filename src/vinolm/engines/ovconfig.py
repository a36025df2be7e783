"""OpenVINO properties: vinolm's defaults per device and workload, and user overrides.

Users override anything with ``--ov-config KEY=VALUE``; values are parsed as JSON when
they look like it (numbers, booleans), otherwise kept as strings.
"""

from __future__ import annotations

import json
from typing import Any

from vinolm.errors import InvalidRequest


def parse_ov_config(pairs: list[str] | None) -> dict[str, Any]:
    """``["KEY=VALUE", ...]`` -> dict, with a clear error for a malformed pair."""
    config: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidRequest(f"--ov-config takes KEY=VALUE, got {pair!r}")
        try:
            parsed: Any = json.loads(value)
        except ValueError:
            parsed = value
        config[key.strip()] = parsed if isinstance(parsed, (int, float, bool)) else value
    return config


def compile_properties(device: str, user: dict[str, Any], cache_dir: str | None) -> dict[str, Any]:
    """What a pipeline is compiled with: the model cache (a second load is faster), then
    the user's overrides, which always win."""
    props: dict[str, Any] = {}
    if cache_dir:
        props["CACHE_DIR"] = cache_dir
    props.update(user)
    return props


def available_devices() -> list[str]:
    import openvino as ov

    return list(ov.Core().available_devices)


def check_device(device: str) -> None:
    """Reject a device OpenVINO does not have before a minute of loading fails on it."""
    base = device.split(":", 1)[0].split(".", 1)[0].upper()
    if base in {"AUTO", "MULTI", "HETERO"}:
        return
    devices = available_devices()
    if device.upper() not in {d.upper() for d in devices} and base not in {d.split(".")[0] for d in devices}:
        raise InvalidRequest(f"unknown device {device!r}; this machine has {', '.join(devices + ['AUTO'])}")
