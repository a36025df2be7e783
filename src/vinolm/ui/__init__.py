"""The web UI: the tutorials' instruction and chatbot pages, served by ``vinolm serve`` under ``/ui``.

The pages run in the server process and talk to the models only through the server's
:class:`~vinolm.server.registry.Registry` and each model's
:class:`~vinolm.server.service.ModelService`, like every API: the same loading on demand,
the same admission, the same metrics (protocol ``ui``) and the same engine, so answers to
several browser sessions are batched with each other and with API requests. Gradio is imported only when the UI is
mounted, so importing this package costs nothing.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import gradio as gr
    from fastapi import FastAPI

    from vinolm.server.registry import Registry

#: Where the pages live: the instruction page here, the chatbot at ``PATH + "/chat"``.
PATH = "/ui"
MAIN_PAGE = "Instruct"


def build_ui(registry: Registry) -> gr.Blocks:
    """Both pages as one multipage Gradio app: Instruct (the main page) and Chat, each with
    a picker over the registry's generating models."""
    import gradio as gr

    from vinolm.ui import chat, instruct
    from vinolm.ui.streaming import Sessions

    sessions = Sessions()
    with gr.Blocks(title=f"vinolm: {', '.join(registry.names)}") as demo:
        gr.Navbar(main_page_name=MAIN_PAGE)
        instruct.render(registry, sessions)
    with demo.route("Chat", "/chat"):
        gr.Navbar(main_page_name=MAIN_PAGE)  # each page has its own navbar settings
        chat.render(registry, sessions)
    # No Gradio-side limit on concurrent answers: ModelService admits or refuses them.
    demo.queue(default_concurrency_limit=None)
    return demo


def mount_ui(app: FastAPI, registry: Registry) -> None:
    """Serve the pages on ``app`` under :data:`PATH`."""
    import gradio as gr

    with warnings.catch_warnings():  # multipage apps are never server-side rendered; no news
        warnings.filterwarnings("ignore", message="SSR mode is not supported", category=UserWarning)
        gr.mount_gradio_app(app, build_ui(registry), path=PATH, footer_links=[])
