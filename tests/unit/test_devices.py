"""`vinolm devices` says what vinolm picks on this CPU: the same choices the engines and the
exporter make, on every kind of CPU (and on an older kind rehearsed with ONEDNN_MAX_CPU_ISA)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.cpu import DRAFT_PROPOSALS, HAS_INT8_DOT, LOOKUP_PROPOSALS

from vinolm.cli import main
from vinolm.cpu import cpu_flags, cpu_kind
from vinolm.engines.ovconfig import device_defaults
from vinolm.export.layouts import describe_layout


def devices(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["devices", *argv])
    return code, capsys.readouterr().out


def cpu_entry(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    code, out = devices(capsys, "--json")
    assert code == 0
    [cpu] = [d["cpu"] for d in json.loads(out)["devices"] if d["name"] == "CPU"]
    return cpu


def test_the_cpu_entry_is_what_the_engines_and_the_exporter_pick(capsys: pytest.CaptureFixture[str]) -> None:
    cpu = cpu_entry(capsys)
    kind = cpu_kind()
    assert cpu["cpu_kind"] == kind
    assert cpu["compile_defaults"] == device_defaults("CPU")
    assert cpu["layouts"] == {"int4": describe_layout(kind, "int4"), "int8": describe_layout(kind, "int8")}
    assert cpu["gguf_weight_format"] == ("q4_1" if kind == "avx2" else "int8")
    flags = cpu_flags()
    assert (cpu["lookup_proposals"], cpu["draft_proposals"]) == (LOOKUP_PROPOSALS, DRAFT_PROPOSALS)
    assert cpu["math"] == {
        "bf16": bool({"avx512_bf16", "amx_bf16"} & flags),
        "int8_activations": HAS_INT8_DOT,
    }


@pytest.mark.parametrize(
    ("cap", "flag", "kind", "int8", "proposals", "int4"),
    [
        ("AVX2", "avx2", "avx2", False, (3, 2), "symmetric, fused q/k/v, the rest as the catalog's preset"),
        ("AVX2_VNNI", "avx_vnni", "avx2-vnni", True, (5, 5),
         "symmetric, fused q/k/v, activation groups up to 256, the rest as the catalog's preset"),
    ],
    ids=["avx2", "avx2-vnni"],
)
def test_a_capped_cpu_reads_as_the_older_kind(
    cap: str, flag: str, kind: str, int8: bool, proposals: tuple[int, int], int4: str
) -> None:
    """In a process of its own: oneDNN reads the cap once, and it would hold every later test.
    AVX2_VNNI rehearses an Intel client CPU (AVX-VNNI without AVX-512)."""
    if flag not in cpu_flags(obey_cap=False):
        pytest.skip(f"needs a CPU with {flag}")
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": cap}
    run = [sys.executable, "-m", "vinolm.cli", "devices"]
    cpu = next(
        d["cpu"]
        for d in json.loads(subprocess.check_output([*run, "--json"], env=env))["devices"]
        if d["name"] == "CPU"
    )
    assert (cpu["cpu_kind"], cpu["isa_cap"], cpu["lookup_proposals"], cpu["draft_proposals"]) == (kind, cap, *proposals)
    assert cpu["math"] == {"bf16": False, "int8_activations": int8}
    assert cpu["compile_defaults"]["INFERENCE_PRECISION_HINT"] == "f32"
    assert cpu["compile_defaults"]["DYNAMIC_QUANTIZATION_GROUP_SIZE"] == (64 if int8 else 0)
    assert cpu["layouts"]["int4"] == int4
    out = subprocess.check_output(run, env=env, text=True)
    assert f"kernels capped at {cap}" in out and ("OpenVINO computes in f32" in out) is not int8
    fmt = "int8" if int8 else "q4_1, int8 where no C++ compiler builds its kernel"
    assert f"a GGUF (the default model) is prepared as {fmt}\n" in out
    assert f"prompt lookup proposes {proposals[0]} tokens a step, a draft model {proposals[1]}" in out


def test_layouts_in_words() -> None:
    assert describe_layout("other", "int4") == "the catalog's preset (no layout measured for other CPUs)"
    assert describe_layout("amx", "int4") == (
        "symmetric, fused q/k/v, activation groups up to 128, the rest as the catalog's preset"
    )
    assert describe_layout("avx512-bf16", "int4") == (
        "symmetric, fused q/k/v, activation groups up to 256, the rest as the catalog's preset"
    )
    assert describe_layout("avx512", "int8") == "fused q/k/v, the rest as the catalog's preset"


def test_the_model_cache_is_described(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from vinolm.engines import compile_cache

    monkeypatch.setenv("VINOLM_HOME", str(tmp_path))
    monkeypatch.setenv(compile_cache.ENV, "2")
    (tmp_path / "ov_cache").mkdir()
    (tmp_path / "ov_cache" / "1.blob").write_bytes(b"\0" * 3_000_000)
    code, out = devices(capsys, "--json")
    assert code == 0 and json.loads(out)["model_cache"] == {
        "folder": str(tmp_path / "ov_cache"), "bytes": 3_000_000, "cap_bytes": 2 * 1024**3,
        "paged_attention_blobs_rejected": False}
    (tmp_path / "ov_cache.json").write_text(json.dumps(
        {"paged_attention_blobs_rejected": [compile_cache.openvino_build("CPU")]}))
    _, out = devices(capsys)
    assert out.splitlines()[-1] == (f"model cache: {tmp_path / 'ov_cache'}, 3 MB of 2 GB (VINOLM_OV_CACHE_GB); genai "
                                    "pipelines compile without it: this OpenVINO cannot import their paged-attention blobs")
    monkeypatch.setenv(compile_cache.ENV, "0")
    _, out = devices(capsys)
    assert out.splitlines()[-1] == "model cache: off (VINOLM_OV_CACHE_GB=0)"
