"""The widened shape: a model's real weights in wider layers must compute what the model does."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from vinolm.bench.shapes import SHAPES, widen

SMALL = {
    "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 2,
    "num_key_value_heads": 1, "head_dim": 32, "vocab_size": 120, "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True, "max_position_embeddings": 64,
}  # fmt: skip


def small_llama() -> object:
    torch.manual_seed(3)
    config = transformers.LlamaConfig(**SMALL)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():  # norm weights of their own, so their rescaled copies are checked too
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.uniform_(0.5, 1.5)
    return model


WIDE = {"hidden_size": 192, "intermediate_size": 256, "num_attention_heads": 6, "num_key_value_heads": 3}


def test_widened_model_answers_as_the_model_does() -> None:
    small = small_llama()
    big = widen(small, WIDE)
    assert (big.config.hidden_size, big.config.num_key_value_heads) == (192, 3)
    ids = torch.tensor([[5, 17, 99, 3, 42, 7, 7, 64]])
    with torch.no_grad():
        want, got = small(ids).logits, big(ids).logits
    assert (want - got).abs().max().item() < 1e-5
    assert sum(p.numel() for p in big.parameters()) > 3 * sum(p.numel() for p in small.parameters())


@pytest.mark.parametrize(("change", "problem"), [
    ({"num_key_value_heads": 2}, "query heads per KV head"),
    ({"hidden_size": 200}, "heads of 32 dimensions"),
    ({"intermediate_size": 64}, "at least the model's widths"),
    ({"vocab_size": 240}, "its vocabulary"),
])  # fmt: skip
def test_a_width_that_cannot_hold_the_model_is_refused(change: dict[str, int], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        widen(small_llama(), {**WIDE, **change})


def test_the_wide_shape_keeps_the_default_models_grouping() -> None:
    shape = SHAPES["smollm2-135m-wide"]
    assert shape.widens == "smollm2-135m" and shape.preset_model == "smollm2-135m"
    assert shape.config["num_attention_heads"] // shape.config["num_key_value_heads"] == 9 // 3
    assert shape.config["hidden_size"] == shape.config["num_attention_heads"] * 64
