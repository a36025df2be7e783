"""Loading an engine compiles into vinolm's model cache, first makes room in it, and stops
caching genai's paged-attention pipelines where OpenVINO cannot import their blobs."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from vinolm.engines import EngineOptions, compile_cache, load_engine
from vinolm.models import PreparedModel

pytestmark = pytest.mark.slow
HOUR_NS = 3600 * 10**9


def stamps(cache: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in cache.glob("*.blob")}


def test_a_load_over_the_cap_drops_the_blob_used_longest_ago_and_keeps_the_last(
    tiny_model: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    int8, fp16 = (PreparedModel.open(tiny_model("llama", weights)) for weights in ("int8", "fp16"))
    monkeypatch.setenv("VINOLM_HOME", str(tmp_path))
    monkeypatch.setenv(compile_cache.ENV, str(1 / 1024**3))  # one byte: the blob used last only
    cache = tmp_path / "ov_cache"
    blobs = []
    for model in (int8, fp16, fp16):  # the native engine's stateful model: its blobs import
        with load_engine("native", model, EngineOptions()) as engine:
            assert engine.properties["CACHE_DIR"] == str(cache)
        blobs.append(stamps(cache))
        for path in cache.glob("*.blob"):  # the next load comes an hour later
            used = path.stat().st_mtime_ns - HOUR_NS
            os.utime(path, ns=(used, used))
    first, both, last = blobs
    assert len(first) == 1 and len(both) == 2 and first.keys() < both.keys(), blobs  # kept though over the cap
    assert last.keys() < both.keys() and not last.keys() & first.keys(), blobs
    assert all(last[name] == both[name] - HOUR_NS for name in last), blobs  # fp16's blobs, read not rewritten


def test_genai_stops_caching_where_openvino_rewrites_its_paged_attention_blob(
    tiny_model: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = PreparedModel.open(tiny_model("llama"))
    monkeypatch.setenv("VINOLM_HOME", str(tmp_path))
    cache, record = tmp_path / "ov_cache", tmp_path / "ov_cache.json"
    loads = []
    for _ in range(3):
        with load_engine("genai", model, EngineOptions()) as engine:
            loads.append(("CACHE_DIR" in engine.properties, stamps(cache), record.exists()))
    (cached1, first, _), (cached2, second, rejected), (cached3, third, _) = loads
    assert cached1 and cached2 and len(first) == 1, loads
    if rejected:  # OpenVINO 2026.4.1's CPU plugin: the blob was read, deleted and compiled again
        assert second == {} and not cached3 and third == {}, loads
        assert json.loads(record.read_text())["paged_attention_blobs_rejected"], record.read_text()
    else:  # an OpenVINO that imports it: a hit reads the blob and leaves it as it was
        assert first == second == third and cached3, loads


def test_an_sdpa_pipeline_keeps_its_cache(tiny_model: Callable[..., Path], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    model = PreparedModel.open(tiny_model("llama"))
    monkeypatch.setenv("VINOLM_HOME", str(tmp_path))
    (tmp_path / "ov_cache.json").write_text(json.dumps({"paged_attention_blobs_rejected": [
        compile_cache.openvino_build("CPU")]}))
    options = EngineOptions(ov_config={"ATTENTION_BACKEND": "SDPA"})
    blobs = []
    for _ in range(2):
        with load_engine("genai", model, options) as engine:
            assert engine.properties["CACHE_DIR"] == str(tmp_path / "ov_cache")
        blobs.append(stamps(tmp_path / "ov_cache"))
    assert len(blobs[0]) == 1 and blobs[0] == blobs[1], blobs
    with load_engine("genai", model, EngineOptions()) as engine:  # paged: this build was recorded
        assert "CACHE_DIR" not in engine.properties
