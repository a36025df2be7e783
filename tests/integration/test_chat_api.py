"""The Python API as the README shows it, on the real default model (SmolLM2-135M, INT8).

Greedy decoding throughout. The context test uses a fact this 135M model keeps — "Remember
this: the secret word is banana. Reply with OK." in turn 1, "What is the secret word?" in
turn 2 — and a control without turn 1, so it fails if history is not carried. Both genai
paths run it: ``batching=False`` (LLMPipeline) and ``batching=True``
(ContinuousBatchingPipeline with prefix caching, which ``vinolm chat`` uses). Measured on
AMD EPYC with bf16 or f32 math and a u8, f16 or f32 KV cache: the secret word was recalled
in all eight combinations; "my name is Zara" in six (f32 math with an f16 cache lost it),
"my dog's name is Max" and "the password is tiger" in two. The model's recall is a matter
of rounding, so the test uses the fact that survives it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import vinolm
from vinolm import Message, Model
from vinolm.types import GenerationParams, Request

pytestmark = pytest.mark.slow

# "...I told you?": asked "What is the secret word?", the symmetric INT8 export in f32 (what an
# AVX2 CPU runs, rehearsed with ONEDNN_MAX_CPU_ISA=AVX2) answered "a fruit"; every layout and
# arithmetic answers this question with the word.
FACT, ASK, ANSWER = ("Remember this: the secret word is banana. Reply with OK.", "What is the secret word I told you?",
                     "banana")
SMALL_WINDOW = 256


@pytest.fixture(scope="module")
def load() -> Iterator[Callable[[bool], Model]]:
    """``load(batching)`` -> the default model on that genai path, loaded once per module."""
    loaded: dict[bool, Model] = {}

    def get(batching: bool = False) -> Model:
        if batching not in loaded:
            loaded[batching] = vinolm.load(batching=batching)
        return loaded[batching]

    yield get
    for model in loaded.values():
        model.close()


@pytest.fixture
def model(load: Callable[[bool], Model]) -> Model:
    return load(False)


def test_generate_and_stream_give_the_same_greedy_text(model: Model) -> None:
    prompt = "The capital of France is"  # shorter than a KV block: no prefix-cache hit on the second call
    text = model.generate(prompt, max_new_tokens=12)
    pieces = list(model.stream(prompt, max_new_tokens=12))
    assert text.strip() and len(pieces) >= 2, "stream() should yield the answer in pieces"
    assert "".join(pieces) == text


def test_unknown_generation_parameter_is_rejected(model: Model) -> None:
    with pytest.raises(vinolm.InvalidRequest, match="max_tokens"):
        model.generate("Hi", max_tokens=4)


def test_chat_send_streams_and_the_answer_joins_the_history(model: Model) -> None:
    chat = model.chat(system="You are terse.", max_new_tokens=16)
    response = chat.send("Hi! My name is Ada.")
    assert chat.history == [], "nothing runs (or is remembered) before the response is read"
    pieces = list(response)
    assert len(pieces) >= 2
    assert chat.history == [Message("user", "Hi! My name is Ada."), Message("assistant", "".join(pieces))]
    assert chat.messages[0] == Message("system", "You are terse.")
    assert response.metrics.input_tokens > 0 and response.metrics.output_tokens >= len(pieces)


def test_history_is_plain_data_and_survives_save_and_load(model: Model, tmp_path: Path) -> None:
    chat = model.chat(system="You are terse.", max_new_tokens=8)
    chat.send("Hello.").text()
    chat.send("Nice to meet you.").text()
    data = json.loads(json.dumps(chat.to_dict()))
    assert data["system"] == "You are terse."
    assert [m["role"] for m in data["messages"]] == ["user", "assistant", "user", "assistant"]

    chat.save(tmp_path / "chat.json")
    restored = model.chat()
    restored.load(tmp_path / "chat.json")
    assert (restored.system, restored.history) == (chat.system, chat.history)

    question = "What did I say first?"
    with_history = restored.send(question, max_new_tokens=1)
    with_history.text()
    fresh = model.chat(system="You are terse.").send(question, max_new_tokens=1)
    fresh.text()
    assert with_history.metrics.input_tokens > fresh.metrics.input_tokens, "the loaded history is sent"


def test_loading_a_file_that_is_not_a_chat_fails_clearly(model: Model, tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("[1, 2]")
    with pytest.raises(vinolm.InvalidRequest, match="not a saved chat"):
        model.chat().load(broken)


def test_saving_or_loading_where_it_cannot_is_a_clear_error_and_leaves_no_temp_file(model: Model,
                                                                                   tmp_path: Path) -> None:
    chat = model.chat()
    for target in (tmp_path, tmp_path / "missing" / "chat.json"):  # a folder; a folder that is not there
        with pytest.raises(vinolm.InvalidRequest, match=f"cannot save to {target}"):
            chat.save(target)
    with pytest.raises(vinolm.InvalidRequest, match=f"cannot read {tmp_path}"):
        chat.load(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_instruct_returns_only_the_response(model: Model) -> None:
    instruction = "Name three colours."
    answer = model.instruct(instruction, max_new_tokens=24).text()
    assert answer.strip()
    for template_text in ("<|im_start|>", "<|im_end|>", "assistant\n", instruction):
        assert template_text not in answer


@pytest.mark.parametrize("batching", [False, True], ids=["llm-pipeline", "prefix-caching"])
def test_two_turn_chat_carries_context(load: Callable[[bool], Model], batching: bool) -> None:
    model = load(batching)
    chat = model.chat(max_new_tokens=24)
    chat.send(FACT).text()
    assert ANSWER in chat.send(ASK).text()

    control = model.chat(max_new_tokens=24).send(ASK).text()
    assert ANSWER not in control, "without turn 1 the model must not produce the fact"


def test_overflowing_history_is_trimmed_keeping_the_system_message(
    model: Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(type(model.engine), "context_length", SMALL_WINDOW)
    system = "You are a librarian. Answer in one sentence."
    chat = model.chat(system=system, max_new_tokens=32)
    padding = "I would like a short and friendly answer, please. " * 4
    for topic in ("rivers", "mountains", "deserts", "forests"):
        response = chat.send(f"Tell me about {topic}. {padding}")
        response.text()
    metrics = response.metrics
    assert metrics.trimmed_messages > 0
    assert metrics.input_tokens + 32 <= SMALL_WINDOW
    assert len(chat.history) == 8, "trimming shortens the model input, not the conversation"

    request = Request(messages=chat.messages + [Message("user", "And oceans?")], params=chat.params)
    prepared = model.engine.prepare_input(request)
    prompt = model.engine.detokenize(prepared.ids, skip_special_tokens=False)
    assert system in prompt and "rivers" not in prompt and "And oceans?" in prompt


def test_a_message_past_half_the_context_is_answered_in_what_is_left(model: Model) -> None:
    """A chat request without max_tokens asks for the server's limit (4096, half this context),
    which was reserved for the answer: a 5,000-token message was a 400 on every chat API. It
    is kept, the answer capped at what the context has left, as a raw prompt's is."""
    context = model.engine.context_length
    message = "A long text to read. " * (context // 7)
    request = Request(messages=[Message("user", "Summarise: " + message)],
                      params=GenerationParams(max_new_tokens=4096))
    prepared = model.engine.prepare_input(request)
    assert context // 2 < len(prepared.ids) < context
    assert prepared.max_new_tokens == context - len(prepared.ids)
