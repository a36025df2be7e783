"""Prompt formatting, checked against prompts written out by hand for every catalog format."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import pytest

from vinolm import catalog
from vinolm.catalog import ChatFormat
from vinolm.errors import InvalidRequest
from vinolm.prompts import (
    ChatSpec,
    encode_chat,
    fit_messages,
    render_chat,
    render_instruction,
    response_only,
)
from vinolm.types import Message

SYSTEM_EN = (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while being "
    "safe.  Your answers should not include any harmful, unethical, racist, sexist, toxic, dangerous, or illegal "
    "content. Please ensure that your responses are socially unbiased and positive in nature.\nIf a question does "
    "not make any sense or is not factually coherent, explain why instead of answering something not correct. If "
    "you don't know the answer to a question, please don't share false information."
)
DOLLY_INTRO = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)

CONVERSATION = [
    Message("system", "Be brief."),
    Message("user", "Hi"),
    Message("assistant", "Hello!"),
    Message("user", "Name a color."),
]

_ZEPHYR = (
    "<s><|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello!</s>\n"
    "<|user|>\nName a color.</s>\n<|assistant|>\n"
)
_CHATML = (
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nName a color.<|im_end|>\n"
    "<|im_start|>assistant\n"
)
_GEMMA = (
    "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"
    "<start_of_turn>user\nName a color.<end_of_turn>\n<start_of_turn>model\n"
)
_LLAMA3 = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nName a color.<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)

# Every catalog model with its own format (not its tokenizer's), rendered for CONVERSATION.
EXPECTED_CHAT = {
    "tiny-llama-1b-chat": _ZEPHYR,
    "zephyr-7b-beta": _ZEPHYR,
    "notus-7b-v1": _ZEPHYR,
    "phi-2": "Be brief.\nInstruct: Hi\nOutput: Hello!\nInstruct: Name a color.\nOutput:",
    "dolly-v2-3b": (
        "Be brief.\n\n### Instruction:\nHi\n\n### Response:\nHello!\n\n### End\n\n"
        "### Instruction:\nName a color.\n\n### Response:\n"
    ),
    "red-pajama-3b-instruct": "Be brief.\nQ: Hi\nA: Hello!\nQ: Name a color.\nA:",
    "red-pajama-3b-chat": "Be brief.\n<human>: Hi\n<bot>: Hello!\n<human>: Name a color.\n<bot>:",
    "mistral-7b": "<s>[INST] Be brief.\n\nHi [/INST]Hello!</s>[INST] Name a color. [/INST]",
    "llama-2-chat-7b": (
        "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] Name a color. [/INST]"
    ),
    "llama-3-8b-instruct": _LLAMA3,
    "gemma-2b-it": _GEMMA,
    "gemma-7b-it": _GEMMA,
    "phi-3-mini-instruct": (
        "<s><|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n"
        "<|user|>\nName a color.<|end|>\n<|assistant|>\n"
    ),
    "qwen-7b-chat": _CHATML,
    "mpt-7b-chat": _CHATML,
    "neural-chat-7b-v3-1": (
        "<s>### System:\nBe brief.\n### User:\nHi\n### Assistant:\nHello!\n### User:\nName a color.\n### Assistant:\n"
    ),
    "youri-7b-chat": "設定: Be brief.\nユーザー: Hi\nシステム: Hello!\nユーザー: Name a color.\nシステム: ",
    "baichuan2-7b-chat": "Be brief.<reserved_106>Hi<reserved_107>Hello!<reserved_106>Name a color.<reserved_107>",
}

EXPECTED_INSTRUCTION = {
    "tiny-llama-1b-chat": "<s><|user|>\nWhy?</s>\n<|assistant|>\n",
    "phi-2": "Instruct: Why?\nOutput:",
    "dolly-v2-3b": DOLLY_INTRO + "\n\n### Instruction:\nWhy?\n\n### Response:\n",
    "red-pajama-3b-instruct": "Q: Why?\nA:",
    "mistral-7b": "<s>[INST] Why? [/INST]",
    "llama-3-8b-instruct": (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" + DOLLY_INTRO + "<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhy?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
}

SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Zephyr/TinyLlama's template as the repository stores it: blocks on their own, indented lines.
ZEPHYR_TEMPLATE = """{% for message in messages %}
    {% if message['role'] == 'user' %}
{{ '<|user|>\n' + message['content'] + eos_token }}
    {% elif message['role'] == 'system' %}
{{ '<|system|>\n' + message['content'] + eos_token }}
    {% elif message['role'] == 'assistant' %}
{{ '<|assistant|>\n'  + message['content'] + eos_token }}
    {% endif %}
    {% if loop.last and add_generation_prompt %}
{{ '<|assistant|>' }}
    {% endif %}
{% endfor %}"""

LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def spec_for(name: str, tokenizer_config: dict | None = None) -> ChatSpec:
    return ChatSpec.build(catalog.resolve(name), tokenizer_config)


def char_ids(text: str) -> list[int]:
    """A fake tokenizer whose ids can be written by hand: one id per character."""
    return [ord(ch) for ch in text]


def word_ids(text: str) -> list[int]:
    """A fake tokenizer with one token per whitespace-separated word."""
    return [len(word) for word in text.split()]


# --- catalog formats --------------------------------------------------------------------------


def test_every_catalog_format_has_a_hand_written_expectation() -> None:
    own_format = {entry.name for entry in catalog.entries() if entry.chat.kind != "tokenizer"}
    assert set(EXPECTED_CHAT) == own_format


@pytest.mark.parametrize("name", sorted(EXPECTED_CHAT))
def test_catalog_chat_formats_render_exactly(name: str) -> None:
    assert render_chat(spec_for(name), CONVERSATION) == EXPECTED_CHAT[name]


@pytest.mark.parametrize("name", sorted(e.name for e in catalog.entries() if e.chat.kind == "history"))
def test_history_formats_encode_as_their_rendered_text(name: str) -> None:
    spec = spec_for(name)
    calls: list[str] = []

    def tokenize(text: str) -> list[int]:
        calls.append(text)
        return char_ids(text)

    assert encode_chat(spec, CONVERSATION, tokenize) == char_ids(EXPECTED_CHAT[name])
    assert calls == [EXPECTED_CHAT[name]]


def test_catalog_default_system_message_is_used_when_the_conversation_has_none() -> None:
    expected = f"<s>[INST] <<SYS>>\n{SYSTEM_EN}\n<</SYS>>\n\nHi [/INST]"
    assert render_chat(spec_for("llama-2-chat-7b"), [Message("user", "Hi")]) == expected


def test_an_empty_system_message_switches_the_default_off() -> None:
    messages = [Message("system", ""), Message("user", "Hi")]
    assert render_chat(spec_for("llama-2-chat-7b"), messages) == "<s>[INST] Hi [/INST]"


def test_models_without_a_default_system_message_start_with_the_user() -> None:
    assert render_chat(spec_for("red-pajama-3b-chat"), [Message("user", "Hi")]) == "<human>: Hi\n<bot>:"


def test_several_leading_system_messages_are_joined() -> None:
    messages = [Message("system", "A."), Message("system", "B."), Message("user", "Hi")]
    assert render_chat(spec_for("red-pajama-3b-chat"), messages) == "A.\n\nB.\n<human>: Hi\n<bot>:"


def test_consecutive_messages_of_one_role_are_merged_for_pair_formats() -> None:
    messages = [Message("user", "a"), Message("user", "b")]
    assert render_chat(spec_for("red-pajama-3b-chat"), messages) == "<human>: a\n\nb\n<bot>:"


def test_a_conversation_opened_by_the_assistant_gets_an_empty_user_turn() -> None:
    messages = [Message("system", "S"), Message("assistant", "Welcome"), Message("user", "Hi")]
    expected = "S\n<human>: \n<bot>: Welcome\n<human>: Hi\n<bot>:"
    assert render_chat(spec_for("red-pajama-3b-chat"), messages) == expected


def test_braces_in_messages_are_text_not_placeholders() -> None:
    messages = [Message("user", "{assistant} {0}"), Message("assistant", "{user}"), Message("user", "{}")]
    expected = "<human>: {assistant} {0}\n<bot>: {user}\n<human>: {}\n<bot>:"
    assert render_chat(spec_for("red-pajama-3b-chat"), messages) == expected


def test_system_messages_after_the_start_are_rejected_by_catalog_formats() -> None:
    messages = [Message("user", "Hi"), Message("system", "late"), Message("user", "Hi again")]
    with pytest.raises(InvalidRequest, match="system messages only at the start"):
        render_chat(spec_for("llama-2-chat-7b"), messages)


# --- baichuan2 token ids ----------------------------------------------------------------------


def test_baichuan2_ids_are_built_by_hand() -> None:
    messages = [Message("system", "S"), Message("user", "hi"), Message("assistant", "yo"), Message("user", "ok")]
    ids = encode_chat(spec_for("baichuan2-7b-chat"), messages, char_ids)
    assert ids == [83, 195, 104, 105, 196, 121, 111, 195, 111, 107, 196]


def test_baichuan2_uses_its_default_system_message_and_never_tokenizes_empty_text() -> None:
    def tokenize(text: str) -> list[int]:
        assert text, "empty text must not reach the tokenizer"
        return char_ids(text)

    ids = encode_chat(spec_for("baichuan2-7b-chat"), [Message("user", "")], tokenize)
    assert ids[:3] == [ord("你"), ord("是"), ord("一")]
    assert ids[-2:] == [195, 196]


# --- instructions -----------------------------------------------------------------------------


def test_every_instruction_template_has_a_hand_written_expectation() -> None:
    with_template = {entry.name for entry in catalog.entries() if entry.instruction_template}
    assert set(EXPECTED_INSTRUCTION) == with_template


@pytest.mark.parametrize("name", sorted(EXPECTED_INSTRUCTION))
def test_instruction_templates_render_exactly(name: str) -> None:
    assert render_instruction(spec_for(name), "Why?") == EXPECTED_INSTRUCTION[name]


@pytest.mark.parametrize("name", ["dolly-v2-3b", "phi-2", "red-pajama-3b-instruct"])
def test_one_chat_turn_of_an_instruction_model_is_its_instruction_prompt(name: str) -> None:
    spec = spec_for(name)
    assert render_chat(spec, [Message("user", "Why?")]) == render_instruction(spec, "Why?")


def test_instruction_without_a_template_is_one_chat_turn() -> None:
    spec = spec_for("qwen-7b-chat")
    assert render_instruction(spec, "Why?") == render_chat(spec, [Message("user", "Why?")])


def test_instruction_for_a_plain_model_is_the_bare_text() -> None:
    assert render_instruction(ChatSpec.build(None, None), "Once upon a time") == "Once upon a time"


def test_instruction_braces_are_kept() -> None:
    assert render_instruction(spec_for("phi-2"), "use {x} or {}") == "Instruct: use {x} or {}\nOutput:"


def test_response_only_cuts_at_dollys_end_key() -> None:
    spec = spec_for("dolly-v2-3b")
    assert response_only(spec, " Paris is the capital.\n### End\n### Instruction:\nmore") == "Paris is the capital."


def test_response_only_drops_an_echoed_prompt() -> None:
    spec = spec_for("dolly-v2-3b")
    text = render_instruction(spec, "Capital of France?") + "Paris.\n\n### End"
    assert response_only(spec, text) == "Paris."


def test_response_only_cuts_at_catalog_stop_tokens() -> None:
    assert response_only(spec_for("llama-3-8b-instruct"), "Blue.<|eot_id|>junk") == "Blue."


# --- stop strings and spec building -------------------------------------------------------------


def test_stop_strings_are_catalog_stop_tokens_plus_end_key() -> None:
    assert spec_for("dolly-v2-3b").stop_strings == ("### End",)
    assert spec_for("llama-3-8b-instruct").stop_strings == ("<|eot_id|>", "<|end_of_text|>")
    assert spec_for("red-pajama-3b-chat").stop_strings == ("<human>:", "<|endoftext|>")


def test_unknown_model_with_a_template_uses_it_and_stops_at_its_turn_end() -> None:
    spec = ChatSpec.build(None, {"chat_template": SMOLLM2_TEMPLATE, "bos_token": {"content": "<|im_start|>"}})
    assert (spec.kind, spec.model, spec.bos_token) == ("tokenizer", None, "<|im_start|>")
    assert spec.stop_strings == ("<|im_end|>",)


def test_unknown_model_without_a_template_is_plain() -> None:
    spec = ChatSpec.build(None, {"chat_template": "", "eos_token": "</s>"})
    assert (spec.kind, spec.eos_token, spec.stop_strings) == ("plain", "</s>", ("\nUser:",))


def test_catalog_model_whose_tokenizer_lacks_a_template_falls_back_to_plain() -> None:
    spec = spec_for("qwen2-7b-instruct")
    assert spec.kind == "plain"
    assert spec.stop_strings == ("<|im_end|>", "<|endoftext|>", "\nUser:")


def test_catalog_format_wins_over_the_tokenizer_template() -> None:
    spec = spec_for("tiny-llama-1b-chat", {"chat_template": ZEPHYR_TEMPLATE})
    assert spec.kind == "history"
    assert spec.chat_template == ZEPHYR_TEMPLATE


def test_named_templates_pick_default() -> None:
    config = {
        "chat_template": [
            {"name": "tool_use", "template": "TOOLS"},
            {"name": "default", "template": "DEFAULT {{ messages[0]['content'] }}"},
        ]
    }
    assert render_chat(ChatSpec.build(None, config), [Message("user", "Hi")]) == "DEFAULT Hi"


def test_unknown_token_id_builder_is_refused() -> None:
    entry = catalog.resolve("baichuan2-7b-chat")
    odd = replace(entry, chat=ChatFormat(kind="token_ids", builder="mystery"))
    with pytest.raises(ValueError, match="mystery"):
        ChatSpec.build(odd, None)


# --- tokenizer chat templates -------------------------------------------------------------------


def test_smollm2_template_renders_like_transformers() -> None:
    spec = spec_for("smollm2-135m", {"chat_template": SMOLLM2_TEMPLATE, "eos_token": "<|im_end|>"})
    assert spec.kind == "tokenizer"
    assert render_chat(spec, [Message("user", "Hi")]) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert render_chat(spec, CONVERSATION, add_generation_prompt=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nName a color.<|im_end|>\n"
    )


def test_block_lines_are_trimmed_like_transformers() -> None:
    spec = ChatSpec.build(None, {"chat_template": ZEPHYR_TEMPLATE, "eos_token": {"content": "</s>"}})
    rendered = render_chat(spec, CONVERSATION)
    assert rendered == _ZEPHYR.removeprefix("<s>")
    assert rendered == render_chat(spec_for("zephyr-7b-beta"), CONVERSATION).removeprefix("<s>")


def test_bos_token_reaches_the_template() -> None:
    config = {"chat_template": LLAMA3_TEMPLATE, "bos_token": "<|begin_of_text|>"}
    spec = ChatSpec.build(None, config)
    assert render_chat(spec, CONVERSATION) == _LLAMA3
    assert spec.stop_strings == ("<|eot_id|>",)


def test_catalog_default_system_message_reaches_tokenizer_templates() -> None:
    spec = spec_for("qwen2-1.5b-instruct", {"chat_template": SMOLLM2_TEMPLATE})
    assert render_chat(spec, [Message("user", "Hi")]) == (
        f"<|im_start|>system\n{SYSTEM_EN}<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_template_helpers_match_transformers() -> None:
    template = "{{ strftime_now('%Y') }}|{{ messages[-1]['content'] | tojson }}"
    spec = ChatSpec.build(None, {"chat_template": template})
    assert render_chat(spec, [Message("user", "你好 <b>")]) == f'{datetime.now().year}|"你好 <b>"'


def test_generation_blocks_and_loop_controls_are_supported() -> None:
    template = "{% for m in messages %}{% generation %}{{ m['content'] }}{% endgeneration %}{% break %}{% endfor %}"
    spec = ChatSpec.build(None, {"chat_template": template})
    assert render_chat(spec, [Message("user", "first"), Message("user", "second")]) == "first"


def test_a_template_can_reject_the_conversation() -> None:
    template = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    spec = ChatSpec.build(None, {"chat_template": template})
    with pytest.raises(InvalidRequest, match="rejected the conversation: System role not supported"):
        render_chat(spec, CONVERSATION)


def test_a_broken_template_is_reported() -> None:
    spec = ChatSpec.build(None, {"chat_template": "{% for %}"})
    with pytest.raises(InvalidRequest, match="TemplateSyntaxError"):
        render_chat(spec, [Message("user", "Hi")])


@pytest.mark.parametrize(
    "template",
    ["{{ messages.__class__.__mro__ }}", "{% set seen = [] %}{{ seen.append(1) }}"],
)
def test_templates_run_in_an_immutable_sandbox(template: str) -> None:
    spec = ChatSpec.build(None, {"chat_template": template})
    with pytest.raises(InvalidRequest, match="SecurityError"):
        render_chat(spec, [Message("user", "Hi")])


# --- plain format -------------------------------------------------------------------------------


def test_plain_format() -> None:
    spec = ChatSpec.build(None, None)
    assert render_chat(spec, CONVERSATION) == (
        "Be brief.\n\nUser: Hi\nAssistant: Hello!\nUser: Name a color.\nAssistant:"
    )
    assert render_chat(spec, [Message("user", "Hi")], add_generation_prompt=False) == "User: Hi"


# --- conversation errors ------------------------------------------------------------------------

SPECS = {
    "plain": ChatSpec.build(None, None),
    "history": spec_for("llama-2-chat-7b"),
    "token_ids": spec_for("baichuan2-7b-chat"),
    "tokenizer": ChatSpec.build(None, {"chat_template": SMOLLM2_TEMPLATE}),
}


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_empty_conversation_is_rejected(kind: str) -> None:
    with pytest.raises(InvalidRequest, match="empty"):
        encode_chat(SPECS[kind], [], char_ids)


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_conversation_must_end_with_a_user_message(kind: str) -> None:
    with pytest.raises(InvalidRequest, match="must end with a user message or a tool result, not 'assistant'"):
        render_chat(SPECS[kind], CONVERSATION[:3])
    with pytest.raises(InvalidRequest, match="not 'system'"):
        encode_chat(SPECS[kind], [Message("system", "only")], char_ids)


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_unknown_role_is_rejected_even_after_construction(kind: str) -> None:
    message = Message("user", "Hi")
    message.role = "function"
    with pytest.raises(InvalidRequest, match="unknown role 'function'"):
        render_chat(SPECS[kind], [message])


def test_message_itself_refuses_unknown_roles() -> None:
    with pytest.raises(InvalidRequest, match="unknown role 'robot'"):
        Message("robot", "beep")


# --- context budget -----------------------------------------------------------------------------

LONG_CHAT = [
    Message("system", "Be brief."),
    Message("user", "one two three"),
    Message("assistant", "four five"),
    Message("user", "six"),
    Message("assistant", "seven"),
    Message("user", "eight nine"),
]
# In the plain format and with word_ids: 17 tokens whole, 10 without the first exchange, 6 with
# only the system message and the last question.


def test_a_conversation_that_fits_is_kept_whole() -> None:
    kept, ids, dropped = fit_messages(SPECS["plain"], LONG_CHAT, word_ids, context_length=20, max_new_tokens=3)
    assert (kept, len(ids), dropped) == (LONG_CHAT, 17, 0)


def test_the_oldest_exchange_goes_first() -> None:
    kept, ids, dropped = fit_messages(SPECS["plain"], LONG_CHAT, word_ids, context_length=20, max_new_tokens=4)
    assert kept == [LONG_CHAT[0], LONG_CHAT[3], LONG_CHAT[4], LONG_CHAT[5]]
    assert ids == word_ids("Be brief.\n\nUser: six\nAssistant: seven\nUser: eight nine\nAssistant:")
    assert (len(ids), dropped) == (10, 2)


def test_system_and_last_user_message_survive_a_small_window() -> None:
    kept, ids, dropped = fit_messages(SPECS["plain"], LONG_CHAT, word_ids, context_length=12, max_new_tokens=4)
    assert kept == [LONG_CHAT[0], LONG_CHAT[5]]
    assert (len(ids), dropped) == (6, 4)


def test_a_last_message_past_the_reserve_is_kept_and_the_answer_gets_the_rest() -> None:
    """As with a raw prompt: what is left of the context caps the answer (the caller's job)."""
    kept, ids, dropped = fit_messages(SPECS["plain"], LONG_CHAT, word_ids, context_length=8, max_new_tokens=4)
    assert kept == [LONG_CHAT[0], LONG_CHAT[5]]
    assert (len(ids), dropped) == (6, 4)


def test_too_small_a_window_names_the_sizes() -> None:
    with pytest.raises(InvalidRequest, match=r"needs 6 tokens.*context is 6 tokens") as caught:
        fit_messages(SPECS["plain"], LONG_CHAT, word_ids, context_length=6, max_new_tokens=1)
    assert caught.value.param == "messages"


def test_max_new_tokens_filling_the_context_is_rejected() -> None:
    with pytest.raises(InvalidRequest) as caught:
        fit_messages(SPECS["plain"], LONG_CHAT, word_ids, context_length=64, max_new_tokens=64)
    assert caught.value.param == "max_new_tokens"


def test_budget_drops_as_few_exchanges_as_possible() -> None:
    spec = spec_for("llama-2-chat-7b")
    chat = [Message("system", "S")]
    for turn in range(12):
        chat += [Message("user", f"question {turn} " * (turn + 1)), Message("assistant", f"answer {turn}")]
    chat.append(Message("user", "last"))
    full = len(encode_chat(spec, chat, char_ids))
    minimal = len(encode_chat(spec, [chat[0], chat[-1]], char_ids))
    for budget in range(minimal, full + 1, 37):
        kept, ids, dropped = fit_messages(spec, chat, char_ids, context_length=budget + 10, max_new_tokens=10)
        assert len(ids) <= budget
        assert ids == encode_chat(spec, kept, char_ids)
        assert kept[0] == chat[0] and kept[-1] == chat[-1] and kept[1].role == "user"
        assert dropped == len(chat) - len(kept) and dropped % 2 == 0
        if dropped:
            one_fewer = [chat[0], *chat[len(chat) - len(kept) - 1 :]]
            assert len(encode_chat(spec, one_fewer, char_ids)) > budget
