"""The chatbot page: a conversation per browser session, with Stop reaching the engine.

Laid out as in the tutorial (``llm-chatbot``): the conversation, a message box with Submit,
Stop and Clear, the advanced options (its ranges and defaults) and example prompts in the
model's languages. The conversation lives in a ``gr.State``, so each session has its own;
their answers meet only inside the engine, which batches them together.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import gradio as gr

from vinolm.errors import VinolmError
from vinolm.types import GenerationParams, Message, Request

if TYPE_CHECKING:
    from vinolm.catalog import CatalogEntry
    from vinolm.server.service import ModelService
    from vinolm.ui.streaming import Sessions

#: As in the tutorial: answers are capped at 256 new tokens.
MAX_NEW_TOKENS = 256
LANGUAGE_NAMES = {"en": "English", "zh": "Chinese", "ja": "Japanese"}

Turn = dict[str, str]  # {"role": ..., "content": ...}: what gr.Chatbot shows, and the model's history


def render(service: ModelService, sessions: Sessions) -> None:
    """Build the page's components and events inside the current ``gr.Blocks``."""
    page = ChatPage(service, sessions)
    gr.Markdown(f"<h1 style='text-align: center'>OpenVINO {service.model_name} Chatbot</h1>")
    conversation = gr.State([])
    chatbot = gr.Chatbot(height=460, show_label=False, buttons=["copy", "copy_all"], elem_id="chat-log")
    with gr.Row(equal_height=True):
        message = gr.Textbox(placeholder="Chat message box", show_label=False, container=False, scale=4,
                             elem_id="chat-input")
        submit = gr.Button("Submit", variant="primary", scale=1, min_width=90, elem_id="chat-submit")
        stop = gr.Button("Stop", variant="stop", scale=1, min_width=90, elem_id="chat-stop")
        clear = gr.Button("Clear", scale=1, min_width=90, elem_id="chat-clear")
    options = _advanced_options()
    for language, examples in model_examples(service.engine.model.entry):
        gr.Examples([[text] for text in examples], inputs=message,
                    label=f"{language} examples: click one, then Submit")

    answers = [
        event(page.add_user, [message, conversation], [message, chatbot, conversation], queue=False).then(
            page.answer, [conversation, *options], [chatbot, conversation, message])
        for event in (message.submit, submit.click)
    ]
    stop.click(page.stop, queue=False)
    # Clear cancels the running answer and empties the page only once it has ended, so no
    # late update of the answer refills it.
    for event in (clear.click, chatbot.clear):  # the button, and the chatbot's own trash icon
        event(page.discard, None, None, cancels=answers).then(page.cleared, None, [message, chatbot, conversation])


def _advanced_options() -> list[gr.Slider]:
    """Temperature, top-p, top-k and repetition penalty, with the tutorial's ranges and defaults."""
    with gr.Accordion("Advanced options", open=False), gr.Row():
        return [
            gr.Slider(0.0, 1.0, value=0.1, step=0.1, label="Temperature",
                      info="Higher values produce more diverse outputs; 0 is greedy"),
            gr.Slider(0.0, 1.0, value=1.0, step=0.01, label="Top-p (nucleus sampling)",
                      info="Sample from the fewest tokens whose probability reaches top-p; 1 disables"),
            gr.Slider(0, 200, value=50, step=1, label="Top-k",
                      info="Sample from the k most likely tokens; 0 disables"),
            gr.Slider(1.0, 2.0, value=1.1, step=0.1, label="Repetition penalty",
                      info="Penalize repetition; 1.0 disables"),
        ]


class ChatPage:
    """The page's event handlers; every browser session is told apart by its session hash."""

    def __init__(self, service: ModelService, sessions: Sessions) -> None:
        self.service = service
        self.sessions = sessions

    async def add_user(self, text: str, turns: list[Turn],
                       request: gr.Request) -> tuple[str, list[Turn], list[Turn]]:
        """Put the message into the conversation at once; ``answer`` follows."""
        if self.sessions.busy(request.session_hash):
            gr.Warning("An answer is still being written: wait for it or press Stop.")
            return text, turns, turns
        if not text.strip():
            return "", turns, turns
        turns = [*turns, {"role": "user", "content": text}]
        return "", turns, turns

    async def answer(self, turns: list[Turn], temperature: float, top_p: float, top_k: float,
                     repetition_penalty: float, request: gr.Request) -> AsyncIterator[tuple[Any, ...]]:
        """Stream the reply to the last user message; an error puts that message back in the box."""
        session = request.session_hash
        if not turns or turns[-1]["role"] != "user" or self.sessions.busy(session):
            return
        generation = Request(messages=[Message(t["role"], t["content"]) for t in turns],
                             params=chat_params(temperature, top_p, top_k, repetition_penalty))
        try:
            async for progress in self.sessions.stream(self.service, generation, session):
                shown = [*turns, {"role": "assistant", "content": progress.text.strip()}]
                yield shown, shown, gr.skip()
        except VinolmError as exc:
            gr.Warning(exc.message)
            kept = turns[:-1]
            yield kept, kept, turns[-1]["content"]

    async def stop(self, request: gr.Request) -> None:
        """Cancel the answer in the engine; what was written so far stays in the conversation."""
        self.sessions.stop(request.session_hash)

    async def discard(self, request: gr.Request) -> None:
        await self.sessions.discard(request.session_hash)

    @staticmethod
    def cleared() -> tuple[str, list[Turn], list[Turn]]:
        return "", [], []


def chat_params(temperature: float, top_p: float, top_k: float,
                repetition_penalty: float) -> GenerationParams:
    """The sliders as generation settings.

    Top-p 0 keeps only the most likely token, which is greedy decoding; the engine wants
    top-p above 0, so it is expressed as temperature 0.
    """
    greedy = temperature <= 0 or top_p <= 0
    return GenerationParams(
        max_new_tokens=MAX_NEW_TOKENS,
        temperature=0.0 if greedy else float(temperature),
        top_p=float(top_p) if top_p > 0 else 1.0,
        top_k=int(top_k),
        repetition_penalty=float(repetition_penalty),
    )


def model_examples(entry: CatalogEntry | None) -> list[tuple[str, list[str]]]:
    """(language name, prompts) for each of the model's languages the catalog has examples in."""
    if entry is None:
        return []
    return [(LANGUAGE_NAMES.get(lang, lang), list(entry.examples[lang]))
            for lang in entry.languages if entry.examples.get(lang)]
