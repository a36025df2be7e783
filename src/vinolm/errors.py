"""Typed errors. Each boundary (CLI, HTTP, gRPC) translates them exactly once.

Messages are written for the person who has to fix the problem: they name the
offending value and, where possible, say what would work instead.
"""

from __future__ import annotations


class VinolmError(Exception):
    """Base class of every error vinolm raises on purpose."""

    #: HTTP status a server boundary should answer with.
    http_status: int = 500
    #: OpenAI error "type" field.
    kind: str = "server_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        #: A machine-readable reason where the API has one (OpenAI's ``unsupported_parameter``).
        self.code = code


class InvalidRequest(VinolmError):
    """The caller asked for something impossible: bad numbers, bad shapes, bad text."""

    http_status = 400
    kind = "invalid_request_error"


class UnknownModel(VinolmError):
    """A model reference that is neither a catalog name, a path nor a usable hub id."""

    http_status = 404
    kind = "not_found_error"


class ExportError(VinolmError):
    """Turning a source model into OpenVINO IR failed."""

    http_status = 500
    kind = "export_error"


class EngineError(VinolmError):
    """The inference engine could not load a model or failed while generating."""

    http_status = 500
    kind = "engine_error"


class Overloaded(VinolmError):
    """Too many requests are queued; the caller should retry later."""

    http_status = 429
    kind = "rate_limit_error"


class Unavailable(VinolmError):
    """The server is shutting down (draining) and takes no new requests; retry elsewhere."""

    http_status = 503
    kind = "service_unavailable"
