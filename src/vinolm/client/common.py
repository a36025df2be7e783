"""What every client shares: where to send, what to ask, and its one error type."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from vinolm.errors import EngineError

#: Called with (prompt index, new text) as streamed text arrives.
OnText = Callable[[int, str], None]


class ClientError(EngineError):
    """The remote engine could not be reached or refused the request; the message says which.

    An EngineError, so ``vinolm`` exits with 1 (a failure at run time), not 2 (bad input).
    """


@dataclass
class Target:
    """A server endpoint and the request settings every protocol understands."""

    url: str
    model: str
    api_key: str | None = None
    max_tokens: int | None = None


@dataclass
class RunResult:
    """One client run: per prompt its completion and generated-token count, plus timings.

    ``response_times`` (streaming only) holds, per response, the seconds since the request
    was sent (first) or since the previous response (the rest), as the demo measures them.
    """

    prompts: list[str]
    completions: list[str]
    token_counts: list[int]
    total_time: float = 0.0
    response_times: list[float] = field(default_factory=list)


class Stopwatch:
    """Times a run and the gaps between streamed responses."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.gaps: list[float] = []

    def response(self) -> None:
        now = time.perf_counter()
        self.gaps.append(now - self.last)
        self.last = now

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def http_base(url: str) -> str:
    """``HOST:PORT`` or a full ``http(s)://`` URL -> a base URL without trailing slash."""
    return (url if "://" in url else f"http://{url}").rstrip("/")


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def raise_for_status(status: int, content: bytes) -> None:
    """Turn an HTTP error answer (OpenAI or KServe error body) into a ClientError."""
    if status < 400:
        return
    try:
        error = json.loads(content).get("error")
        message = error.get("message") if isinstance(error, dict) else error
    except (ValueError, AttributeError):
        message = content.decode(errors="replace")[:200]
    raise ClientError(f"the server answered {status}: {message}")
