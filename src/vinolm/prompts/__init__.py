"""Prompt formatting as pure functions: instruction templates, chat formats, context budget.

An engine builds one :class:`ChatSpec` per model (``ChatSpec.build(entry, tokenizer_config)``)
and passes it, with the conversation and its tokenizer, to these functions. Nothing here
imports OpenVINO, torch or transformers; chat templates are rendered with sandboxed jinja2.
"""

from vinolm.prompts.budget import fit_messages
from vinolm.prompts.chat import Tokenize, check_conversation, encode_chat, render_chat
from vinolm.prompts.instruct import instruction_request, render_instruction, response_only
from vinolm.prompts.spec import PLAIN_STOP_STRINGS, ChatSpec

__all__ = [
    "PLAIN_STOP_STRINGS",
    "ChatSpec",
    "Tokenize",
    "check_conversation",
    "encode_chat",
    "fit_messages",
    "instruction_request",
    "render_chat",
    "render_instruction",
    "response_only",
]
