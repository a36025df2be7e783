"""Single instructions (not conversations): the tutorials' per-model prompt templates.

Instruction-tuned models such as Dolly were trained on one exact layout and answer
poorly outside it, so the template is applied verbatim and their end marker is cut off.
"""

from __future__ import annotations

from vinolm.prompts.chat import render_chat
from vinolm.prompts.spec import ChatSpec
from vinolm.types import GenerationParams, Message, Request


def render_instruction(spec: ChatSpec, instruction: str) -> str:
    """The prompt for one instruction.

    Without an instruction template a chat model gets the instruction as a single user
    turn of its chat format (with its default system message); a ``plain`` model gets the
    bare text, which is what a base model continues best.
    """
    if spec.instruction_template is not None:
        return spec.instruction_template.format(instruction=instruction)
    if spec.kind == "plain":
        return instruction
    return render_chat(spec, [Message("user", instruction)])


def response_only(spec: ChatSpec, text: str) -> str:
    """The answer alone: after the response key if the text echoes the prompt, before any stop.

    Dolly-style models keep writing past ``### End`` when not stopped by token id; the
    catalog's stop strings (which include the end key) mark where the answer ends.
    """
    if spec.response_key and spec.response_key in text:
        text = text.split(spec.response_key, 1)[1]
    cut = min((text.find(stop) for stop in spec.stop_strings if stop in text), default=len(text))
    return text[:cut].strip()


def instruction_request(spec: ChatSpec, instruction: str, params: GenerationParams) -> Request:
    """The request for one instruction, stopping on the model's stop strings and end key.

    Chat models without an instruction template get one user turn, formatted (and budgeted)
    by the engine like any conversation.
    """
    params = params.with_(stop=list(params.stop) + [s for s in spec.stop_strings if s not in params.stop])
    if spec.instruction_template is None:
        return Request(messages=[Message("user", instruction)], params=params)
    return Request(prompt=render_instruction(spec, instruction), params=params)
