"""vinolm: Hugging Face language models, compressed with OpenVINO, run locally."""

from vinolm.api import Model, load
from vinolm.chat.session import Chat, Response
from vinolm.errors import EngineError, ExportError, InvalidRequest, UnknownModel, VinolmError
from vinolm.types import GenerationParams, Message, Metrics

__version__ = "0.1.0"

__all__ = [
    "Chat",
    "EngineError",
    "ExportError",
    "GenerationParams",
    "InvalidRequest",
    "Message",
    "Metrics",
    "Model",
    "Response",
    "UnknownModel",
    "VinolmError",
    "load",
]
