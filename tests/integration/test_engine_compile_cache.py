"""Loading an engine compiles into vinolm's model cache and first makes room in it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from vinolm.engines import EngineOptions, compile_cache, load_engine
from vinolm.models import PreparedModel

pytestmark = pytest.mark.slow


def test_a_load_over_the_cap_replaces_the_blob_used_longest_ago(
    tiny_model: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = [PreparedModel.open(tiny_model("llama", weights)) for weights in ("int8", "fp16")]  # two blobs
    monkeypatch.setenv("VINOLM_HOME", str(tmp_path))  # after the tiny models, which are built from it
    monkeypatch.setenv(compile_cache.ENV, str(1 / 1024**3))  # one byte: room for the newest blob only
    cache = tmp_path / "ov_cache"
    blobs = []
    for model in models:
        with load_engine("genai", model, EngineOptions()) as engine:
            assert engine.properties["CACHE_DIR"] == str(cache)
        blobs.append(sorted(p.name for p in cache.glob("*.blob")))
    assert len(blobs[0]) == 1 and len(blobs[1]) == 1 and blobs[0] != blobs[1], blobs
