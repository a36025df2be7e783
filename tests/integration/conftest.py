"""Real models for the integration tests: the default model and tiny random-weight ones.

Exports are cached on disk (see ``tests/tiny_models.py``), so only the first run of the
suite pays for them. ``vinolm`` runs the CLI as a user would: a separate process, its
exit code, stdout and stderr.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests import tiny_models

from vinolm.cpu import cpu_kind
from vinolm.engines import Engine, EngineOptions, load_engine
from vinolm.engines.ovconfig import cap_properties
from vinolm.models import DEFAULT_MODEL, PreparedModel, prepare

#: The same arithmetic in every engine: f32 math, an f32 KV cache and OpenVINO's own
#: activation-quantization groups (32). OpenVINO computes in bf16 on CPUs that have it and
#: keeps the KV cache in u8, which genai's paged cache and the stateful model's cache
#: quantize differently (see test_engine_parity.py). With vinolm's default groups of 64,
#: genai's 4-beam search on the default model parted from optimum's at token 16 of one
#: prompt (AMD EPYC, measured) while greedy decoding still agreed. On AVX-VNNI CPUs the
#: default model's symmetric INT8 answers "What is the capital of France?" with "L'Étoile, la
#: Marseillaise, la femme, ..." with groups of 32 and "Paris" with vinolm's 64 (Xeon capped at
#: AVX2_VNNI, 2026-12-06), and on AMX "L'Étoile, la Marseur, ..." (2026-12-06), so the tests
#: take vinolm's groups on those kinds. Under ONEDNN_MAX_CPU_ISA=AVX2 (an AVX2 CPU rehearsed)
#: nothing with int8 activations compiles, so the cap's own properties come last.
F32: dict[str, Any] = {
    "INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32",
    "DYNAMIC_QUANTIZATION_GROUP_SIZE": 64 if cpu_kind() in ("avx2-vnni", "amx") else 32,
    **cap_properties(),
}


@pytest.fixture(scope="session")
def default_model() -> PreparedModel:
    """SmolLM2-135M-Instruct, INT8: exported once into $VINOLM_HOME and reused."""
    return prepare(DEFAULT_MODEL, "int8", progress=lambda _: None)


@pytest.fixture(scope="session")
def tiny_model() -> Callable[..., Path]:
    """``tiny_model(arch, weight_format="int8")`` -> the exported folder, built on first use."""
    return tiny_models.exported


@pytest.fixture(scope="session")
def vinolm_command() -> list[str]:
    """The installed console script, to start ``vinolm`` as a user would."""
    return [str(Path(sys.executable).with_name("vinolm"))]


@pytest.fixture(scope="session")
def vinolm(vinolm_command: list[str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``vinolm(*args, timeout=...)`` runs the CLI and returns the finished process."""

    def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*vinolm_command, *args], capture_output=True, text=True, timeout=timeout, check=False
        )

    return run


@pytest.fixture(scope="session")
def engine() -> Iterator[Callable[..., Engine]]:
    """``engine(name, folder, ov_config=F32, **extra)`` -> a loaded engine, shared by the session.

    ``extra`` properties are added to ``ov_config``. Loading costs seconds (optimum alone
    imports torch), so each engine is loaded once per model and properties; tests must
    leave it ready for the next request.
    """
    loaded: dict[tuple[str, str, str], Engine] = {}

    def get(name: str, folder: Path, ov_config: dict[str, Any] | None = None, **extra: Any) -> Engine:
        config = {**(F32 if ov_config is None else ov_config), **extra}
        key = (name, str(folder), repr(sorted(config.items())))
        if key not in loaded:
            loaded[key] = load_engine(name, PreparedModel.open(folder), EngineOptions(ov_config=dict(config)))
        return loaded[key]

    yield get
    for item in loaded.values():
        item.close()
