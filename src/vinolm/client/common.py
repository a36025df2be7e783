"""What every client shares: where to send, what to ask, and its one error type."""

from __future__ import annotations

import asyncio
import json
import random
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from vinolm.errors import EngineError, InvalidRequest

#: Called with (prompt index, new text) as streamed text arrives.
OnText = Callable[[int, str], None]
T = TypeVar("T")


class ClientError(EngineError):
    """The remote engine could not be reached or refused the request; the message says which.

    An EngineError, so ``vinolm`` exits with 1 (a failure at run time), not 2 (bad input).
    """


class Retryable(ClientError):
    """A failure that left the request without a single token: the server never took it
    (connection refused, 503 while it drains, 429 while it is full) or its stream ended
    before the first token. Sending it again cannot repeat anything the user has seen."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a request with no token yet is sent again: exponential
    backoff with full jitter (so clients of a replica that died do not return in step),
    never sooner than the server's ``Retry-After``."""

    attempts: int = 4
    base_delay: float = 0.25
    max_delay: float = 8.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        backoff = random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))
        return max(backoff, min(retry_after or 0.0, self.max_delay))


NO_RETRY = RetryPolicy(attempts=1)
#: The statuses after which nothing was generated and another try may succeed.
RETRY_STATUSES = frozenset({429, 502, 503, 504})
#: A 500 is retried only without vinolm's error body: vinolm never answers 500 itself, but
#: Ray Serve's proxy does (plain "Internal Server Error") when the replica died before its
#: first byte, so nothing was generated and another replica can take the request.
PROXY_FAILURE = 500
#: The HTTP header and gRPC metadata key that name a conversation. Ray Serve's proxies read
#: them into the request's session id, which ``vinolm serve --replicas`` keeps on one replica
#: (its prefix cache holds the history; docs/deploy.md); one plain server ignores them.
SESSION_HEADER = "x-session-id"
SESSION_METADATA = "session_id"


def retrying(policy: RetryPolicy, call: Callable[[], T]) -> T:
    """``call()``, again after each Retryable failure, ``policy.attempts`` times in all."""
    for attempt in range(policy.attempts):
        try:
            return call()
        except Retryable as exc:
            if attempt + 1 >= policy.attempts:
                raise
            time.sleep(policy.delay(attempt, exc.retry_after))
    raise AssertionError("unreachable")


async def aretrying(policy: RetryPolicy, call: Callable[[], Awaitable[T]]) -> T:
    """The asyncio twin of :func:`retrying`."""
    for attempt in range(policy.attempts):
        try:
            return await call()
        except Retryable as exc:
            if attempt + 1 >= policy.attempts:
                raise
            await asyncio.sleep(policy.delay(attempt, exc.retry_after))
    raise AssertionError("unreachable")


@dataclass
class Target:
    """A server endpoint and the request settings every protocol understands."""

    url: str
    model: str
    api_key: str | None = None
    max_tokens: int | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    session: str | None = None


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
    """``HOST:PORT`` or a full ``http(s)://`` URL -> a base URL without trailing slash.

    Checked here, before any request: a mistyped URL is the caller's to fix (exit 2), where
    an unreachable server is a failure at run time (exit 1).
    """
    base = (url if "://" in url else f"http://{url}").rstrip("/")
    try:
        parts = urllib.parse.urlsplit(base)
        usable = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port out of range, a broken IPv6 literal
        usable = False
    if not usable:
        raise InvalidRequest(f"bad --url {url!r}: give http(s)://HOST[:PORT] or HOST:PORT, "
                             "e.g. http://127.0.0.1:8000")
    return base


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def request_headers(target: Target) -> dict[str, str]:
    """The HTTP headers of every request to ``target``: its API key and its session."""
    return {**auth_headers(target.api_key), **({SESSION_HEADER: target.session} if target.session else {})}


def raise_for_status(status: int, content: bytes, retry_after: str | None = None) -> None:
    """Turn an HTTP error answer (OpenAI or KServe error body) into a ClientError, a
    Retryable one where nothing was generated and a later try may succeed."""
    if status < 400:
        return
    try:
        error = json.loads(content).get("error")
        message = error.get("message") if isinstance(error, dict) else error
    except (ValueError, AttributeError):
        error, message = None, " ".join(content.decode(errors="replace").split())[:200]  # one line
    if status in RETRY_STATUSES or (status == PROXY_FAILURE and error is None):
        raise Retryable(f"the server answered {status}: {message}", _seconds(retry_after))
    raise ClientError(f"the server answered {status}: {message}")


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None
