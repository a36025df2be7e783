"""ChatSpec: everything needed to turn messages into one model's input, decided once per model.

Engines build a spec when they load a model and hand it to the pure functions of this
package on every request, so formatting never re-reads files or re-decides precedence.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from vinolm.catalog import CatalogEntry, ChatFormat

SpecKind = Literal["tokenizer", "history", "token_ids", "plain"]

#: Builders for the ``token_ids`` kind that :mod:`vinolm.prompts.chat` implements.
TOKEN_ID_BUILDERS: tuple[str, ...] = ("baichuan2",)

#: The plain format's role labels: ``User: ...`` / ``Assistant: ...``. Stopping at the next
#: ``User:`` keeps a model without chat training from writing the user's side too.
PLAIN_USER = "User: "
PLAIN_ASSISTANT = "Assistant:"
PLAIN_STOP_STRINGS: tuple[str, ...] = ("\nUser:",)

#: Hermes/Qwen ``<tool_call>`` is what most small chat models were trained to write.
DEFAULT_TOOL_FORMAT = "hermes"
#: A marker in an unknown model's template that names its tool-call format.
_TOOL_MARKERS: tuple[tuple[str, str], ...] = (
    ("[TOOL_CALLS]", "mistral"), ("<tool_call>", "hermes"), ("<|python_tag|>", "llama3_json"),
)

# End-of-turn markers that, seen in an unknown model's chat template, are worth stopping on:
# many such models declare only <|endoftext|> as EOS and would otherwise run on.
_TURN_END_MARKERS: tuple[str, ...] = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>")


@dataclass(frozen=True)
class ChatSpec:
    """How to format input for one model.

    ``kind`` is what is actually used: ``tokenizer`` renders ``chat_template`` (jinja from
    the tokenizer), ``history`` and ``token_ids`` follow ``chat_format`` from the catalog,
    and ``plain`` is the fallback for models with no chat format at all::

        <system message>          (only when there is one, followed by a blank line)
        User: <message>
        Assistant: <reply>
        User: <message>
        Assistant:

    ``system_message`` is the default used when a conversation brings none. ``tool_format``
    is how the model writes tool calls (``vinolm.catalog.TOOL_FORMATS``): the catalog's, or
    for unknown models guessed from the template's own markers.
    """

    kind: SpecKind
    model: str | None = None
    chat_template: str | None = None
    bos_token: str | None = None
    eos_token: str | None = None
    chat_format: ChatFormat | None = None
    system_message: str | None = None
    instruction_template: str | None = None
    response_key: str | None = None
    end_key: str | None = None
    stop_strings: tuple[str, ...] = ()
    tool_format: str = DEFAULT_TOOL_FORMAT

    @classmethod
    def build(cls, entry: CatalogEntry | None, tokenizer_config: Mapping[str, Any] | None) -> ChatSpec:
        """Combine a catalog entry (None for models outside the catalog) with ``tokenizer_config.json``.

        The catalog's own formats win over the tokenizer's template because they are the
        ones tested here; the tokenizer's template is used where the catalog defers to it
        and for unknown models. A catalog model that defers to a tokenizer without a
        template degrades to ``plain`` rather than failing to chat at all.
        """
        config = tokenizer_config or {}
        template = _chat_template(config)
        bos, eos = _token_text(config.get("bos_token")), _token_text(config.get("eos_token"))
        if entry is None:
            kind: SpecKind = "tokenizer" if template else "plain"
            return cls(
                kind=kind,
                chat_template=template,
                bos_token=bos,
                eos_token=eos,
                stop_strings=_guessed_stops(kind, template),
                tool_format=_guessed_tool_format(template),
            )
        kind = _kind_for(entry, template)
        fmt = entry.chat if kind in ("history", "token_ids") else None
        if fmt is not None and fmt.kind == "token_ids" and fmt.builder not in TOKEN_ID_BUILDERS:
            raise ValueError(f"catalog entry {entry.name!r}: unknown token id builder {fmt.builder!r}")
        stops = entry.stop_tokens + ((entry.end_key,) if entry.end_key else ())
        if kind == "plain":
            stops += PLAIN_STOP_STRINGS
        return cls(
            kind=kind,
            model=entry.name,
            chat_template=template,
            bos_token=bos,
            eos_token=eos,
            chat_format=fmt,
            system_message=entry.system_message,
            instruction_template=entry.instruction_template,
            response_key=entry.response_key,
            end_key=entry.end_key,
            stop_strings=tuple(dict.fromkeys(stops)),
            tool_format=entry.tool_format or DEFAULT_TOOL_FORMAT,
        )


def _kind_for(entry: CatalogEntry, template: str | None) -> SpecKind:
    if entry.chat.kind == "history":
        return "history"
    if entry.chat.kind == "token_ids":
        return "token_ids"
    return "tokenizer" if template else "plain"


def _chat_template(config: Mapping[str, Any]) -> str | None:
    """The template string; tokenizers with several named templates store a list of them.

    Among named templates "default" is the chat one; without it the first is taken, where
    transformers would refuse, because a usable chat beats none.
    """
    value = config.get("chat_template")
    if isinstance(value, str):
        return value or None
    if isinstance(value, list) and value:
        named = {item.get("name"): item.get("template") for item in value if isinstance(item, Mapping)}
        chosen = named.get("default") or next(iter(named.values()), None)
        return chosen if isinstance(chosen, str) and chosen else None
    return None


def _token_text(value: Any) -> str | None:
    """Special tokens appear as plain strings or as AddedToken dicts with a ``content`` key."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _guessed_stops(kind: SpecKind, template: str | None) -> tuple[str, ...]:
    if kind == "plain":
        return PLAIN_STOP_STRINGS
    return tuple(marker for marker in _TURN_END_MARKERS if template and marker in template)


def _guessed_tool_format(template: str | None) -> str:
    return next((fmt for marker, fmt in _TOOL_MARKERS if template and marker in template), DEFAULT_TOOL_FORMAT)
