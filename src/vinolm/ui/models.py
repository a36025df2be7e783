"""The model picker both pages share: which served models can answer, and the one a session picked.

The server's :class:`~vinolm.server.registry.Registry` may serve several models, loaded on
demand; the pages offer the ones that generate text (an embedding model cannot answer a
chat) and send each request to the picked one through the registry, like every API does.
The choice is the dropdown's value, which Gradio keeps per browser session. A model that
fails to load (503) or a registry whose loaded models are all busy (429) raises the
registry's VinolmError, which the pages show as a message, never a hang.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gradio as gr

if TYPE_CHECKING:
    from vinolm.server.registry import Registry
    from vinolm.server.service import ModelService


def generating_models(registry: Registry) -> list[str]:
    """The served names of the models that generate text, in the server's order.

    A loaded model says what it is; an unloaded one is judged from its reference without
    loading it (``ServedModel.task``: an embedding model in the catalog, or a prepared folder
    whose export recorded the embedding task).
    """
    names = []
    for state in registry.states():
        service = state["service"]
        embeds = service.embeds if service is not None else registry.resolve(state["name"]).task() == "embedding"
        if not embeds:
            names.append(state["name"])
    return names


def model_picker(registry: Registry, elem_id: str) -> gr.Dropdown:
    """The dropdown of the generating models; the first is picked (it is loaded at start).

    It shows even with one model, so the page always says which model answers.
    """
    names = generating_models(registry) or [registry.default]
    return gr.Dropdown(names, value=names[0], label="Model", elem_id=elem_id, interactive=True,
                       info="Each answer comes from this model; one that is not loaded yet loads first.")


async def picked_service(registry: Registry, name: str | None) -> ModelService:
    """The service of the picked model, loading it on demand (a worker thread does the load).

    Raises UnknownModel, Unavailable (failed load), Overloaded (all loaded models busy) or
    InvalidRequest (not a generating model), each a VinolmError with a message for the page.
    """
    return (await registry.aservice(name or None)).require("generate")


def default_entry(registry: Registry) -> Any:
    """The catalog entry of the first (loaded) model, for the pages' example prompts."""
    service = registry.loaded(None)
    return getattr(service.engine.model, "entry", None) if service is not None else None
