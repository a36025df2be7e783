"""What a GB of KV cache holds, named when the server loads a model and when a prompt does not
fit: keys and values per token from the model's config, at the cache's precision."""

from __future__ import annotations

import json
from pathlib import Path

from vinolm.engines.genai import _tokens_per_gb
from vinolm.models import PreparedModel


def folder(tmp_path: Path, config: dict[str, object]) -> PreparedModel:
    (tmp_path / "openvino_model.xml").write_text("")
    (tmp_path / "config.json").write_text(json.dumps(config))
    return PreparedModel.open(tmp_path)


def test_an_8b_class_model_holds_8k_tokens_a_gb_in_f16(tmp_path: Path) -> None:
    model = folder(tmp_path, {"num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                              "hidden_size": 4096})
    assert model.kv_values_per_token == 2 * 32 * 8 * 128
    assert _tokens_per_gb(model, {"KV_CACHE_PRECISION": "f16"}) == 8192
    assert _tokens_per_gb(model, {"KV_CACHE_PRECISION": "f32"}) == 4096
    assert _tokens_per_gb(model, {}) == 16384  # OpenVINO's own CPU cache, u8


def test_an_explicit_head_dim_wins_and_an_unknown_shape_names_no_count(tmp_path: Path) -> None:
    model = folder(tmp_path, {"num_hidden_layers": 2, "num_attention_heads": 4, "head_dim": 256, "hidden_size": 64})
    assert model.kv_values_per_token == 2 * 2 * 4 * 256
    (tmp_path / "other").mkdir()
    other = folder(tmp_path / "other", {"model_type": "mystery"})
    assert other.kv_values_per_token is None and _tokens_per_gb(other, {}) is None
