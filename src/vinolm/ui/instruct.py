"""The instruction page: one instruction in, a streamed answer and a live speed readout out.

Laid out as in the tutorial (``llm-question-answering``): instruction, response and
performance boxes with the catalog's example prompts on the left; the device, max new
tokens, top-p, top-k and temperature (the tutorial's ranges and defaults) on the right.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import gradio as gr

from vinolm.errors import VinolmError
from vinolm.prompts import instruction_request, response_only
from vinolm.types import GenerationParams

if TYPE_CHECKING:
    from vinolm.catalog import CatalogEntry
    from vinolm.server.service import ModelService
    from vinolm.ui.streaming import Sessions

PLACEHOLDER = "Write an email about an alpaca that likes flan"


def render(service: ModelService, sessions: Sessions) -> None:
    """Build the page's components and events inside the current ``gr.Blocks``."""
    page = InstructPage(service, sessions)
    gr.Markdown(f"# Question answering with {service.model_name} and OpenVINO\n"
                "Give an instruction describing a task, or pick one of the examples, and the model "
                "writes a response that performs it.")
    with gr.Row():
        with gr.Column(scale=4):
            instruction = gr.Textbox(label="User instruction", placeholder=PLACEHOLDER, lines=2,
                                     elem_id="instruct-input")
            response = gr.Textbox(label="Model response", interactive=False, lines=10,
                                  elem_id="instruct-response")
            performance = gr.Textbox(label="Performance", interactive=False, lines=1,
                                     elem_id="instruct-performance")
            with gr.Row():
                clear = gr.Button("Clear", elem_id="instruct-clear")
                submit = gr.Button("Submit", variant="primary", elem_id="instruct-submit")
            examples = instruction_examples(service.engine.model.entry)
            if examples:
                gr.Examples([[text] for text in examples], inputs=instruction, label="Examples")
        with gr.Column(scale=1):
            _device_selector(service)
            settings = _settings()

    answers = [event(page.run, [instruction, *settings], [response, performance])
               for event in (instruction.submit, submit.click)]
    # Clear cancels the running answer and empties the boxes only once it has ended, so no
    # late update of the answer refills them.
    clear.click(page.discard, None, None, cancels=answers).then(
        page.cleared, None, [instruction, response, performance])


def _settings() -> list[gr.Slider]:
    """Max new tokens, top-p, top-k and temperature, with the tutorial's ranges and defaults."""
    return [
        gr.Slider(1, 1000, value=256, step=1, label="Max new tokens", elem_id="max-new-tokens"),
        gr.Slider(0.05, 1.0, value=0.92, step=0.05, label="Top-p (nucleus sampling)"),
        gr.Slider(0, 50, value=0, step=1, label="Top-k", info="0 turns top-k off"),
        gr.Slider(0.1, 5.0, value=0.8, step=0.1, label="Temperature"),
    ]


class InstructPage:
    """The page's event handlers; every browser session is told apart by its session hash."""

    def __init__(self, service: ModelService, sessions: Sessions) -> None:
        self.service = service
        self.sessions = sessions

    async def run(self, text: str, max_new_tokens: float, top_p: float, top_k: float, temperature: float,
                  request: gr.Request) -> AsyncIterator[tuple[str, str]]:
        """Stream (response, performance line); the last update shows the engine's own numbers."""
        if not text.strip():
            gr.Warning("Type an instruction first, or pick an example.")
            return
        params = GenerationParams(max_new_tokens=int(max_new_tokens), top_p=float(top_p), top_k=int(top_k),
                                  temperature=float(temperature))
        spec = self.service.engine.model.chat_spec
        try:
            async for progress in self.sessions.stream(self.service, instruction_request(spec, text, params),
                                                       request.session_hash):
                shown = response_only(spec, progress.text) if progress.metrics else progress.text.lstrip()
                yield shown, progress.performance_line()
        except VinolmError as exc:
            gr.Warning(exc.message)

    async def discard(self, request: gr.Request) -> None:
        await self.sessions.discard(request.session_hash)

    @staticmethod
    def cleared() -> tuple[str, str, str]:
        return "", "", ""


def instruction_examples(entry: CatalogEntry | None) -> list[str]:
    """The catalog's instruction prompts for this model, else its chat examples in its languages."""
    if entry is None:
        return []
    if "instruct" in entry.examples:
        return list(entry.examples["instruct"])
    return [text for lang in entry.languages for text in entry.examples.get(lang, ())]


def _device_selector(service: ModelService) -> None:
    """OpenVINO's devices plus AUTO; choosing one recompiles the model for every user of the server."""
    from vinolm.engines.ovconfig import available_devices

    current = service.engine.options.device
    choices = list(dict.fromkeys([*available_devices(), "AUTO", current]))
    device = gr.Dropdown(choices, value=current, label="Device", elem_id="device",
                         info="Switching recompiles the model; it applies to everyone using this server.")
    status = gr.Markdown(_device_status(current), elem_id="device-status")

    async def switch(choice: str, progress: gr.Progress = gr.Progress()) -> tuple[str, str]:
        if choice != service.engine.options.device:
            progress(0, desc=f"Compiling {service.model_name} for {choice}...")
            try:
                await asyncio.to_thread(service.switch_device, choice)
            except VinolmError as exc:
                gr.Warning(exc.message)
        now = service.engine.options.device
        return now, _device_status(now)

    device.input(switch, device, [device, status], concurrency_limit=1)


def _device_status(device: str) -> str:
    return f"Running on **{device}**"
