"""The instruction page: one instruction in, a streamed answer and a live speed readout out.

Laid out as in the tutorial (``llm-question-answering``): instruction, response and
performance boxes with the catalog's example prompts on the left; the model picker, the
device, max new tokens, top-p, top-k and temperature (the tutorial's ranges and defaults)
on the right.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import gradio as gr

from vinolm.errors import VinolmError
from vinolm.prompts import instruction_request, response_only
from vinolm.types import GenerationParams
from vinolm.ui.models import default_entry, model_picker, picked_service

if TYPE_CHECKING:
    from vinolm.catalog import CatalogEntry
    from vinolm.server.registry import Registry
    from vinolm.ui.streaming import Sessions

PLACEHOLDER = "Write an email about an alpaca that likes flan"


def render(registry: Registry, sessions: Sessions) -> None:
    """Build the page's components and events inside the current ``gr.Blocks``."""
    page = InstructPage(registry, sessions)
    title = gr.Markdown(_title(registry.default), elem_id="instruct-title")
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
            examples = instruction_examples(default_entry(registry))
            if examples:
                gr.Examples([[text] for text in examples], inputs=instruction, label="Examples")
        with gr.Column(scale=1):
            picker = model_picker(registry, "instruct-model")
            _device_selector(registry, picker)
            settings = _settings()

    picker.change(_title, picker, title, queue=False)
    answers = [event(page.run, [instruction, picker, *settings], [response, performance])
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


def _title(model: str) -> str:
    return (f"# Question answering with {model} and OpenVINO\n"
            "Give an instruction describing a task, or pick one of the examples, and the model "
            "writes a response that performs it.")


class InstructPage:
    """The page's event handlers; every browser session is told apart by its session hash."""

    def __init__(self, registry: Registry, sessions: Sessions) -> None:
        self.registry = registry
        self.sessions = sessions

    async def run(self, text: str, model: str, max_new_tokens: float, top_p: float, top_k: float,
                  temperature: float, request: gr.Request) -> AsyncIterator[tuple[str, str]]:
        """Stream (response, performance line); the last update shows the engine's own numbers."""
        if not text.strip():
            gr.Warning("Type an instruction first, or pick an example.")
            return
        params = GenerationParams(max_new_tokens=int(max_new_tokens), top_p=float(top_p), top_k=int(top_k),
                                  temperature=float(temperature))
        try:
            service = await picked_service(self.registry, model)
            spec = service.engine.model.chat_spec
            async for progress in self.sessions.stream(service, instruction_request(spec, text, params),
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


def _device_selector(registry: Registry, picker: gr.Dropdown) -> None:
    """OpenVINO's devices plus AUTO for the picked model; choosing one recompiles that model
    for every user of the server. Picking another model shows the device it runs on."""
    from vinolm.engines.ovconfig import available_devices

    service = registry.loaded(None)
    current = service.engine.options.device if service is not None else "CPU"
    choices = list(dict.fromkeys([*available_devices(), "AUTO", current]))
    device = gr.Dropdown(choices, value=current, label="Device", elem_id="device",
                         info="Switching recompiles the picked model; it applies to everyone using this server.")
    status = gr.Markdown(_device_status(current), elem_id="device-status")

    async def switch(choice: str, model: str, progress: gr.Progress = gr.Progress()) -> tuple[Any, str]:
        try:
            picked = await picked_service(registry, model)
            if choice != picked.engine.options.device:
                progress(0, desc=f"Compiling {picked.model_name} for {choice}...")
                await asyncio.to_thread(picked.switch_device, choice)
        except VinolmError as exc:
            gr.Warning(exc.message)
            return gr.skip(), gr.skip()
        now = picked.engine.options.device
        return gr.update(value=now, choices=list(dict.fromkeys([*choices, now]))), _device_status(now)

    def shown(model: str) -> tuple[Any, str]:
        """The picked model's device if it is loaded (picking a model does not load it)."""
        loaded = registry.loaded(model)
        if loaded is None:
            return gr.skip(), f"{model} loads on its first answer"
        now = loaded.engine.options.device
        return gr.update(value=now, choices=list(dict.fromkeys([*choices, now]))), _device_status(now)

    device.input(switch, [device, picker], [device, status], concurrency_limit=1)
    picker.change(shown, picker, [device, status], queue=False)


def _device_status(device: str) -> str:
    return f"Running on **{device}**"
