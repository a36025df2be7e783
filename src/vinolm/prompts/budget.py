"""Fit a conversation into the model's context window before generation starts.

Dropping whole old exchanges keeps the prompt well-formed for every chat format, and
keeping the system message and the newest user message (with the tool calls and results
that followed it) keeps the model's instructions and the question being asked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from vinolm.errors import InvalidRequest
from vinolm.prompts.chat import Tokenize, check_conversation, encode_chat
from vinolm.prompts.spec import ChatSpec
from vinolm.types import Message


def fit_messages(
    spec: ChatSpec,
    messages: Sequence[Message],
    tokenize: Tokenize,
    context_length: int,
    max_new_tokens: int,
) -> tuple[list[Message], list[int], int]:
    """Return (kept messages, their input ids, number of messages dropped).

    The oldest exchanges (a user message through the assistant's reply) go first, until
    the prompt plus ``max_new_tokens`` fits in ``context_length``. When even the system
    message and the last user message leave less than that, they are kept alone and the
    answer gets what the context has left (the caller caps it), as for a raw prompt. Raises
    InvalidRequest, naming the sizes, when they leave nothing.
    """
    conversation = check_conversation(messages)
    budget = context_length - max_new_tokens
    if budget <= 0:
        raise InvalidRequest(
            f"max_new_tokens ({max_new_tokens}) leaves no room for the prompt in a context of "
            f"{context_length} tokens; lower max_new_tokens",
            param="max_new_tokens",
        )
    head, exchanges, last = _split(conversation)

    def encode(dropped: int) -> list[int]:
        kept = head + [m for exchange in exchanges[dropped:] for m in exchange] + last
        return encode_chat(spec, kept, tokenize)

    ids = encode(0)
    if len(ids) <= budget:
        return conversation, ids, 0
    minimal = encode(len(exchanges))
    if len(minimal) >= context_length:
        raise InvalidRequest(
            f"the prompt needs {len(minimal)} tokens even with only the system message and the last user "
            f"message, but the model's context is {context_length} tokens; shorten the message",
            param="messages",
        )
    if len(minimal) > budget:
        return head + last, minimal, len(conversation) - len(head) - len(last)
    dropped = _fewest_drops(encode, len(exchanges), budget)
    kept = head + [m for exchange in exchanges[dropped:] for m in exchange] + last
    return kept, encode(dropped), len(conversation) - len(kept)


def _split(conversation: list[Message]) -> tuple[list[Message], list[list[Message]], list[Message]]:
    """Leading system messages, the exchanges after them, and the current turn.

    The current turn is the last user message and what followed it (the assistant's tool
    calls and their results); an exchange ends with an assistant answer, not a tool call,
    so a tool result is never kept without the call it answers.
    """
    start = 0
    while conversation[start].role == "system":
        start += 1
    users = [i for i, m in enumerate(conversation) if m.role == "user" and i >= start]
    current_turn = users[-1] if users else start
    exchanges: list[list[Message]] = []
    current: list[Message] = []
    for message in conversation[start:current_turn]:
        current.append(message)
        if message.role == "assistant" and not message.tool_calls:
            exchanges.append(current)
            current = []
    if current:
        exchanges.append(current)
    return conversation[:start], exchanges, conversation[current_turn:]


def _fewest_drops(encode: Callable[[int], list[int]], total: int, budget: int) -> int:
    """Binary search: dropping more never lengthens the prompt, and encoding is the cost."""
    low, high = 1, total  # dropping 0 does not fit, dropping all does
    while low < high:
        middle = (low + high) // 2
        if len(encode(middle)) <= budget:
            high = middle
        else:
            low = middle + 1
    return low
