"""Turn a conversation into the text (or token ids) a model expects.

Every function here is pure: the same spec and messages always give the same prompt, so
the server, the CLI chat and the web UI cannot drift apart in how they talk to a model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from vinolm.catalog import ChatFormat
from vinolm.errors import InvalidRequest
from vinolm.prompts.jinja import render_template
from vinolm.prompts.spec import PLAIN_ASSISTANT, PLAIN_USER, ChatSpec
from vinolm.prompts.tools import (
    check_tool_turns,
    has_tool_use,
    native_variables,
    plain_conversation,
    template_takes_tools,
)
from vinolm.types import ROLES, Message

Tokenize = Callable[[str], list[int]]


def check_conversation(messages: Sequence[Message]) -> list[Message]:
    """Reject what no chat format can express: no messages, unknown roles, neither a user
    message nor a tool result last, or a tool result for a call nobody made.

    Messages are re-checked here because ``Message`` is mutable and may have been edited
    after it was validated.
    """
    if not messages:
        raise InvalidRequest("the conversation is empty; send at least one user message", param="messages")
    for index, message in enumerate(messages):
        if message.role not in ROLES:
            raise InvalidRequest(
                f"unknown role {message.role!r} in message {index}; use one of {', '.join(ROLES)}",
                param="messages",
            )
        if not isinstance(message.content, str):
            raise InvalidRequest(f"message {index} content must be a string", param="messages")
    if messages[-1].role not in ("user", "tool"):
        raise InvalidRequest(
            f"the conversation must end with a user message or a tool result, not {messages[-1].role!r}",
            param="messages",
        )
    check_tool_turns(messages)
    return list(messages)


def render_chat(spec: ChatSpec, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
    """The prompt text for ``messages``, ending where the assistant's reply should begin.

    ``add_generation_prompt`` reaches tokenizer templates and the plain format; catalog
    formats always end with the assistant's header because their current-message
    template contains it. For ``token_ids`` models the text is a readable preview: use
    :func:`encode_chat` for the real input.
    """
    conversation = check_conversation(messages)
    if spec.kind == "tokenizer":
        return _render_tokenizer(spec, conversation, add_generation_prompt)
    system, turns = _system_and_turns(spec, _plain(spec, conversation))
    if spec.kind == "history":
        return _render_history(_format(spec), system, turns)
    if spec.kind == "token_ids":
        return _render_role_tokens(_format(spec), system, turns)
    return _render_plain(system, turns, add_generation_prompt)


def encode_chat(spec: ChatSpec, messages: Sequence[Message], tokenize: Tokenize) -> list[int]:
    """Input ids for ``messages``.

    ``tokenize`` must not add special tokens: templates carry their own BOS, and adding
    another would give the model a prompt it was never trained on. Baichuan-style models
    get their role token ids placed by hand, as their reference code does.
    """
    if spec.kind != "token_ids":
        return list(tokenize(render_chat(spec, messages)))
    system, turns = _system_and_turns(spec, _plain(spec, check_conversation(messages)))
    return _encode_role_tokens(_format(spec), system, turns, tokenize)


def _plain(spec: ChatSpec, conversation: list[Message]) -> list[Message]:
    """Tool use in the documented system-prompt fallback (see vinolm.prompts.tools)."""
    if not has_tool_use(conversation):
        return conversation
    return plain_conversation(conversation, spec.tool_format, spec.system_message)


def _render_tokenizer(spec: ChatSpec, conversation: list[Message], add_generation_prompt: bool) -> str:
    variables: dict[str, object] = {"add_generation_prompt": add_generation_prompt}
    if has_tool_use(conversation) and template_takes_tools(spec.chat_template):
        variables["messages"], variables["tools"] = native_variables(conversation, spec.system_message)
    else:
        conversation = _plain(spec, conversation)
        if conversation[0].role != "system" and spec.system_message is not None:
            conversation = [Message("system", spec.system_message), *conversation]
        variables["messages"] = [message.to_dict() for message in conversation]
    # Like transformers: only tokens the tokenizer defines become variables.
    tokens = {"bos_token": spec.bos_token, "eos_token": spec.eos_token}
    variables.update({key: value for key, value in tokens.items() if value is not None})
    return render_template(spec.chat_template or "", variables, model=spec.model)


def _system_and_turns(spec: ChatSpec, conversation: list[Message]) -> tuple[str, list[Message]]:
    """Split off the system text and normalise the rest to strictly alternating turns.

    Catalog formats have one system slot and fixed user/assistant pairs, so consecutive
    messages of one role are joined, and a conversation opening with the assistant gets
    an empty user turn before it.
    """
    leading = 0
    while conversation[leading].role == "system":
        leading += 1
    rest = conversation[leading:]
    if any(message.role == "system" for message in rest):
        raise InvalidRequest(
            f"{spec.model or 'this model'} takes system messages only at the start of the conversation",
            param="messages",
        )
    if leading:
        system = "\n\n".join(message.content for message in conversation[:leading])
    else:
        system = spec.system_message or ""
    turns: list[Message] = []
    for message in rest:
        if turns and turns[-1].role == message.role:
            turns[-1] = Message(message.role, f"{turns[-1].content}\n\n{message.content}")
        else:
            turns.append(Message(message.role, message.content))
    if turns[0].role == "assistant":
        turns.insert(0, Message("user", ""))
    return system, turns


def _pairs(turns: list[Message]) -> list[tuple[str, str]]:
    return [(turns[i].content, turns[i + 1].content) for i in range(0, len(turns) - 1, 2)]


def _render_history(fmt: ChatFormat, system: str, turns: list[Message]) -> str:
    start, history, current = _history_templates(fmt)
    parts = [fmt.prefix]
    if system:
        parts.append(start.format(system_message=system))
    parts.extend(history.format(user=user, assistant=reply) for user, reply in _pairs(turns))
    parts.append(current.format(user=turns[-1].content))
    return "".join(parts)


def _render_role_tokens(fmt: ChatFormat, system: str, turns: list[Message]) -> str:
    role_text = {"user": fmt.user_token or "", "assistant": fmt.assistant_token or ""}
    body = "".join(role_text[message.role] + message.content for message in turns)
    return system + body + role_text["assistant"]


def _encode_role_tokens(fmt: ChatFormat, system: str, turns: list[Message], tokenize: Tokenize) -> list[int]:
    """Baichuan 2: system ids, then per message its role id and ids, then the assistant id."""
    if fmt.user_token_id is None or fmt.assistant_token_id is None:
        raise ValueError("a token_ids chat format needs user_token_id and assistant_token_id")
    role_id = {"user": fmt.user_token_id, "assistant": fmt.assistant_token_id}
    ids = _ids(system, tokenize)
    for message in turns:
        ids.append(role_id[message.role])
        ids.extend(_ids(message.content, tokenize))
    ids.append(fmt.assistant_token_id)
    return ids


def _ids(text: str, tokenize: Tokenize) -> list[int]:
    """Some tokenizers return a BOS-only or odd result for "", so empty text is never sent."""
    return list(tokenize(text)) if text else []


def _render_plain(system: str, turns: list[Message], add_generation_prompt: bool) -> str:
    labels = {"user": PLAIN_USER, "assistant": PLAIN_ASSISTANT + " "}
    lines = [labels[message.role] + message.content for message in turns]
    if add_generation_prompt:
        lines.append(PLAIN_ASSISTANT)
    head = f"{system}\n\n" if system else ""
    return head + "\n".join(lines)


def _history_templates(fmt: ChatFormat) -> tuple[str, str, str]:
    start, history, current = fmt.start_template, fmt.history_template, fmt.current_message_template
    if start is None or history is None or current is None:
        raise ValueError("a history chat format needs start, history and current message templates")
    return start, history, current


def _format(spec: ChatSpec) -> ChatFormat:
    if spec.chat_format is None:
        raise ValueError(f"a {spec.kind!r} ChatSpec needs a chat_format")
    return spec.chat_format
