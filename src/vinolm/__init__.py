"""vinolm: Hugging Face language models, compressed with OpenVINO, run locally."""

from vinolm.errors import EngineError, ExportError, InvalidRequest, UnknownModel, VinolmError
from vinolm.types import GenerationParams, Message, Metrics

__version__ = "0.1.0"

__all__ = [
    "EngineError",
    "ExportError",
    "GenerationParams",
    "InvalidRequest",
    "Message",
    "Metrics",
    "UnknownModel",
    "VinolmError",
]
