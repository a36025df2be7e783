"""The chatbot page: a conversation per browser session, with Stop reaching the engine.

Laid out as in the tutorial (``llm-chatbot``): the conversation, a message box with Submit,
Stop and Clear, the advanced options (its ranges and defaults) and example prompts in the
model's languages; above them the model picker, below them an optional Tools panel (an
OpenAI function-tool list, the tool choice, and a box to paste a tool's result). The
conversation lives in a ``gr.State`` in OpenAI's message shape, so each session has its
own and a tool call stays a call (``tool_calls``); the chat shows each call as such, its
function name as the title and its arguments as JSON. Answers of different sessions meet
only inside the engine, which batches them together.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import gradio as gr

from vinolm.errors import InvalidRequest, VinolmError
from vinolm.types import GenerationParams
from vinolm.ui.models import default_entry, model_picker, picked_service
from vinolm.ui.tools import (
    CHOICES,
    EXAMPLE_TOOLS,
    NAMED,
    Turn,
    assistant_turn,
    chat_request,
    explain,
    offered_tools,
    pending_calls,
    pretty_arguments,
    tool_output,
    tool_plan,
)

if TYPE_CHECKING:
    from vinolm.catalog import CatalogEntry
    from vinolm.server.registry import Registry
    from vinolm.ui.streaming import Sessions

#: As in the tutorial: answers are capped at 256 new tokens.
MAX_NEW_TOKENS = 256
LANGUAGE_NAMES = {"en": "English", "zh": "Chinese", "ja": "Japanese"}
CALL_ICON, RESULT_ICON = "\N{HAMMER AND WRENCH}", "\N{PAPERCLIP}"


def render(registry: Registry, sessions: Sessions) -> None:
    """Build the page's components and events inside the current ``gr.Blocks``."""
    page = ChatPage(registry, sessions)
    with gr.Row(equal_height=True):
        title = gr.Markdown(_title(registry.default), elem_id="chat-title")
        picker = model_picker(registry, "chat-model")
    conversation = gr.State([])
    # A call, its result and the answer after it are each a bubble of their own.
    chatbot = gr.Chatbot(height=460, show_label=False, buttons=["copy", "copy_all"], elem_id="chat-log",
                         group_consecutive_messages=False)
    with gr.Row(equal_height=True):
        message = gr.Textbox(placeholder="Chat message box", show_label=False, container=False, scale=4,
                             elem_id="chat-input")
        submit = gr.Button("Submit", variant="primary", scale=1, min_width=90, elem_id="chat-submit")
        stop = gr.Button("Stop", variant="stop", scale=1, min_width=90, elem_id="chat-stop")
        clear = gr.Button("Clear", scale=1, min_width=90, elem_id="chat-clear")
    tools, choice, result, send_result = _tools_panel()
    options = _advanced_options()
    for language, examples in model_examples(default_entry(registry)):
        gr.Examples([[text] for text in examples], inputs=message,
                    label=f"{language} examples: click one, then Submit")

    picker.change(_title, picker, title, queue=False)
    settings = [conversation, picker, tools, choice, *options]
    shown = [chatbot, conversation, message, result]
    answers = [event(page.add_user, [message, conversation], [message, chatbot, conversation], queue=False).then(
        page.answer, settings, shown) for event in (message.submit, submit.click)]
    # Queued (unlike add_user) so that its messages (no call waits, more calls wait) reach the page.
    answers += [event(page.add_result, [result, conversation], [result, chatbot, conversation]).then(
        page.answer, settings, shown) for event in (result.submit, send_result.click)]
    stop.click(page.stop, queue=False)
    # Clear cancels the running answer and empties the page only once it has ended, so no
    # late update of the answer refills it.
    for event in (clear.click, chatbot.clear):  # the button, and the chatbot's own trash icon
        event(page.discard, None, None, cancels=answers).then(page.cleared, None, [message, chatbot, conversation])


def _title(model: str) -> str:
    return f"<h1 style='text-align: center'>OpenVINO {model} Chatbot</h1>"


def _tools_panel() -> tuple[gr.Textbox, gr.Dropdown, gr.Textbox, gr.Button]:
    """The tools editor, its check, the tool choice, and where a tool's result is pasted."""
    with gr.Accordion("Tools", open=False, elem_id="chat-tools-panel"), gr.Row():
        with gr.Column(scale=3):
            tools = gr.Textbox(label="Tools (OpenAI function tools, JSON)", lines=8, max_lines=20,
                               placeholder=EXAMPLE_TOOLS, elem_id="chat-tools")
            status = gr.Markdown("No tools: the model answers in words.", elem_id="chat-tools-status")
        with gr.Column(scale=2):
            choice = gr.Dropdown(list(CHOICES), value="auto", label="Tool choice", elem_id="chat-tool-choice",
                                 info="auto: the model decides; required or a function: it must call one "
                                      "(the answer after a tool result is auto again)")
            result = gr.Textbox(label="Tool result", lines=3, elem_id="chat-tool-result",
                                placeholder="Paste what the called tool returned, then Send result")
            send = gr.Button("Send result", elem_id="chat-tool-send")
    tools.change(_check_tools, [tools, choice], [status, choice], queue=False)
    return tools, choice, result, send


def _check_tools(text: str, choice: str) -> tuple[str, Any]:
    """The editor's verdict, and the choices it allows (a named choice per tool)."""
    try:
        names = offered_tools(text)
    except InvalidRequest as exc:
        return f"\N{WARNING SIGN} {explain(exc)}", gr.update()
    choices = [*CHOICES, *(NAMED + name for name in names)]
    kept = choice if choice in choices else "auto"
    verdict = f"Offered: {', '.join(names)}" if names else "No tools: the model answers in words."
    return verdict, gr.update(choices=[(c.removeprefix(NAMED) if c.startswith(NAMED) else c, c) for c in choices],
                              value=kept)


def _advanced_options() -> list[gr.Slider]:
    """Temperature, top-p, top-k and repetition penalty, with the tutorial's ranges and defaults."""
    with gr.Accordion("Advanced options", open=False), gr.Row():
        return [
            gr.Slider(0.0, 1.0, value=0.1, step=0.1, label="Temperature", elem_id="chat-temperature",
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

    def __init__(self, registry: Registry, sessions: Sessions) -> None:
        self.registry = registry
        self.sessions = sessions

    async def add_user(self, text: str, turns: list[Turn],
                       request: gr.Request) -> tuple[str, list[Any], list[Turn]]:
        """Put the message into the conversation at once; ``answer`` follows."""
        if self.sessions.busy(request.session_hash):
            gr.Warning("An answer is still being written: wait for it or press Stop.")
            return text, display(turns), turns
        if not text.strip():
            return "", display(turns), turns
        turns = [*turns, {"role": "user", "content": text}]
        return "", display(turns), turns

    async def add_result(self, text: str, turns: list[Turn],
                         request: gr.Request) -> tuple[str, list[Any], list[Turn]]:
        """A pasted tool result answers the first call still waiting for one."""
        waiting = pending_calls(turns)
        if self.sessions.busy(request.session_hash):
            gr.Warning("An answer is still being written: wait for it or press Stop.")
        elif not waiting:
            gr.Warning("No tool call is waiting for a result: a result follows the model's tool call.")
        else:
            turns = [*turns, {"role": "tool", "tool_call_id": waiting[0]["id"], "content": text}]
            if len(waiting) > 1:
                gr.Info(f"{len(waiting) - 1} more call(s) wait for a result before the model answers.")
            return "", display(turns), turns
        return text, display(turns), turns

    async def answer(self, turns: list[Turn], model: str, tools_text: str, choice: str, temperature: float,
                     top_p: float, top_k: float, repetition_penalty: float,
                     request: gr.Request) -> AsyncIterator[tuple[Any, ...]]:
        """Stream the reply to the last user message or tool result; an error puts it back in its box."""
        session = request.session_hash
        if not turns or turns[-1]["role"] not in ("user", "tool") or pending_calls(turns) \
                or self.sessions.busy(session):
            return
        params = chat_params(temperature, top_p, top_k, repetition_penalty)
        try:
            service = await picked_service(self.registry, model)
            body = chat_request(turns, tools_text, choice, params)
            plan = tool_plan(body, getattr(service.engine.model, "chat_spec", None))
            generation = body.to_request(MAX_NEW_TOKENS, plan)
            output = tool_output(plan)
            content, calls, raw = "", [], ""
            async for progress in self.sessions.stream(service, generation, session):
                text, found = output.feed(progress.text[len(raw):])
                raw, content, calls = progress.text, content + text, calls + found
                shown = [*turns, assistant_turn(content.strip(), calls)]
                yield display(shown, _forming(plan, raw) if output.plan.mode in ("required", "named") else None), \
                    shown, gr.skip(), gr.skip()
            text, found = output.finish()
            final = [*turns, assistant_turn((content + text).strip(), calls + found)]
            yield display(final), final, gr.skip(), gr.skip()
        except VinolmError as exc:
            gr.Warning(explain(exc))
            kept, last = turns[:-1], turns[-1]["content"]
            yield display(kept), kept, *((last, gr.skip()) if turns[-1]["role"] == "user" else (gr.skip(), last))

    async def stop(self, request: gr.Request) -> None:
        """Cancel the answer in the engine; what was written so far stays in the conversation."""
        self.sessions.stop(request.session_hash)

    async def discard(self, request: gr.Request) -> None:
        await self.sessions.discard(request.session_hash)

    @staticmethod
    def cleared() -> tuple[str, list[Any], list[Turn]]:
        return "", [], []


def _forming(plan: Any, raw: str) -> gr.ChatMessage:
    """A forced call while it is being written: its JSON so far, marked pending."""
    name = plan.named or "a tool"
    return gr.ChatMessage(f"```json\n{raw}\n```", metadata={"title": f"{CALL_ICON} calling {name}...",
                                                              "status": "pending"})


def display(turns: list[Turn], forming: gr.ChatMessage | None = None) -> list[gr.ChatMessage]:
    """The conversation as the chatbot shows it: each tool call a titled box with the
    function's name and its arguments as JSON, each tool result one with the name it answers."""
    names: dict[str, str] = {}
    shown: list[gr.ChatMessage] = []
    for turn in turns:
        if turn["role"] == "tool":
            name = names.get(turn["tool_call_id"], "tool")
            shown.append(gr.ChatMessage(turn["content"], metadata={"title": f"{RESULT_ICON} {name} returned"}))
            continue
        if turn.get("content") or turn["role"] == "user" or not turn.get("tool_calls"):
            shown.append(gr.ChatMessage(turn.get("content") or "", role=turn["role"]))
        for call in turn.get("tool_calls") or []:
            function = call["function"]
            names[call["id"]] = function["name"]
            shown.append(gr.ChatMessage(f"```json\n{pretty_arguments(function['arguments'])}\n```",
                                        metadata={"title": f"{CALL_ICON} {function['name']}"}))
    if forming is not None:
        shown.append(forming)
    return shown


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
