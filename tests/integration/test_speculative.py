"""Speculative decoding on the genai engine: prompt lookup and a draft model propose tokens
the main model checks, so greedy output must be exactly plain decoding's - on LLMPipeline and
on the continuous-batching pipeline the server uses - and what it cannot do is a clear 400.

The arithmetic is exact f32 (conftest's F32 without activation quantization): with an f16
KV cache or int8 activation groups, checking k proposed tokens in one forward pass rounds
differently from k single steps, and a near-tie token may flip (seen on the default model
after 14-30 tokens on an Intel Xeon with AMX, with OpenVINO's groups of 32 as well).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.integration.conftest import F32

from vinolm.engines import EngineOptions, Speculation, load_engine
from vinolm.errors import InvalidRequest
from vinolm.models import PreparedModel
from vinolm.types import GenerationParams, Message, Request

pytestmark = pytest.mark.slow

EXACT = {**F32, "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0}
DOC = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text(encoding="utf-8")[:2500]
GROUNDED = [Message("user", f"{DOC}\n\nRewrite the text above in your own words.")]


def answer(model: PreparedModel, batching: bool, speculation: Speculation | None, **params: int) -> str:
    engine = load_engine("genai", model, EngineOptions(ov_config=dict(EXACT), batching=batching,
                                                       speculation=speculation))
    try:
        return engine.generate(Request(messages=GROUNDED, params=GenerationParams(max_new_tokens=96, **params))).result().text
    finally:
        engine.close()


@pytest.mark.parametrize("batching", [False, True], ids=["llm-pipeline", "continuous-batching"])
def test_greedy_output_is_plain_decodings(default_model: PreparedModel, batching: bool) -> None:
    plain = answer(default_model, batching, None)
    assert len(plain) > 100
    assert answer(default_model, batching, Speculation()) == plain
    assert answer(default_model, batching, Speculation(), num_assistant_tokens=8, max_ngram_size=2) == plain
    draft = str(default_model.path.parent / "int4") if (default_model.path.parent / "int4").is_dir() else "smollm2-135m"
    assert answer(default_model, batching, Speculation(draft=draft)) == plain


def test_what_speculation_cannot_do_is_a_400(default_model: PreparedModel) -> None:
    plain = load_engine("genai", default_model, EngineOptions(ov_config=dict(EXACT)))
    with pytest.raises(InvalidRequest, match="--prompt-lookup") as no_spec:
        plain.check(Request(prompt="Hi", params=GenerationParams(num_assistant_tokens=4)))
    assert no_spec.value.param == "num_assistant_tokens"
    plain.close()
    lookup = load_engine("genai", default_model, EngineOptions(ov_config=dict(EXACT), speculation=Speculation()))
    with pytest.raises(InvalidRequest) as beams:
        lookup.check(Request(prompt="Hi", params=GenerationParams(num_beams=2)))
    assert beams.value.param == "num_beams"
    lookup.close()
    with pytest.raises(InvalidRequest, match="genai engine"):
        load_engine("native", default_model, EngineOptions(speculation=Speculation()))


def test_cli_prompt_lookup_answers_like_plain(vinolm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base = ("generate", "What is the capital of France?", "--greedy", "-n", "24",
            *(arg for key, value in EXACT.items() for arg in ("--ov-config", f"{key}={value}")))
    plain = vinolm(*base)
    lookup = vinolm(*base, "--prompt-lookup", "--num-assistant-tokens", "4")
    assert plain.returncode == 0 and lookup.returncode == 0, lookup.stderr
    assert lookup.stdout == plain.stdout and "Paris" in plain.stdout
    bad = vinolm(*base, "--prompt-lookup", "--num-assistant-tokens", "0")
    assert bad.returncode == 2 and "--num-assistant-tokens must be between 1 and 64" in bad.stderr
    assert "Traceback" not in bad.stderr
    wrong = vinolm(*base, "--prompt-lookup", "--engine", "native")
    assert wrong.returncode == 2 and "genai engine" in wrong.stderr
