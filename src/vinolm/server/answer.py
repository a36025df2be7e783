"""One answer per request, the way the Responses, Ollama and Anthropic layers serve it.

Those APIs ask for one sequence per request, so an HTTP request is one ModelService
ticket. What they share lives here: admission, the client-disconnect watch (the OpenAI
layer's ``MergedStream``, so cancellation takes the one path that is already tested), the
answer accumulated from its chunks and why it ended, and the check that turns a request
field vinolm does not implement into a 400 instead of silently ignoring it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import Request as HTTPRequest

from vinolm.errors import InvalidRequest
from vinolm.server.openai.serving import MergedStream, _unless_disconnected
from vinolm.server.service import ModelService
from vinolm.types import Chunk, Metrics, Request

#: Values that ask for nothing: a client that sends them asks for the default behaviour.
_EMPTY: tuple[Any, ...] = (None, [], {}, "")


def refuse_unsupported(values: Mapping[str, Any], inert: Mapping[str, tuple[Any, ...]],
                       api: str, where: str = "") -> None:
    """400 naming the first field vinolm does not act on, unless it is a documented no-op.

    ``values`` are the fields a wire model did not declare (its ``model_extra``); ``inert``
    maps the ones that change nothing here to the values accepted as "the default" (besides
    null and empty), which real clients send all the time (``"tools": []``, ``"include": []``).
    Anything else is refused by name rather than silently ignored.
    """
    for name, value in values.items():
        if name not in inert or (value not in _EMPTY and value not in inert[name]):
            param = f"{where}{name}"
            shown = "" if name not in inert else f" (got {_short(value)})"
            raise InvalidRequest(f"{param} is not supported by vinolm's {api}{shown}", param=param,
                                 code="unsupported_parameter")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Answer:
    """One admitted request, its chunks as they come, and how it ended.

    ``start`` waits for the first chunk (so an error the engine finds at once is still an
    HTTP 4xx); ``chunks`` yields the text pieces and records them; ``complete`` runs a
    unary answer to its end. Either returns False when the client left, and the generation
    is cancelled then.
    """

    def __init__(self, service: ModelService, request: Request, protocol: str) -> None:
        self.service = service
        self.request = request
        self.created = int(time.time())
        self._merged = MergedStream(service, [service.submit(request, protocol)])
        self._parts: list[str] = []
        self._token_ids: list[int] = []
        self.finish_reason: str | None = None
        self._stop_sequence: tuple[str | None] | None = None

    async def start(self, raw: HTTPRequest) -> bool:
        return bool(await _unless_disconnected(raw, self._merged.prime(), self._merged.close))

    async def complete(self, raw: HTTPRequest) -> bool:
        async def run() -> bool:
            async for _ in self.chunks():
                pass
            return True

        return bool(await _unless_disconnected(raw, run(), self._merged.close))

    async def chunks(self) -> AsyncIterator[Chunk]:
        async for _, chunk in self._merged.events():
            self._parts.append(chunk.text)
            self._token_ids.extend(chunk.token_ids)
            if chunk.finish_reason:
                self.finish_reason = chunk.finish_reason
            yield chunk

    def close(self) -> None:
        self._merged.close()

    @property
    def text(self) -> str:
        return "".join(self._parts)

    @property
    def metrics(self) -> Metrics:
        return self._merged.tickets[0].generation.metrics

    @property
    def hit_length(self) -> bool:
        return self.finish_reason == "length"

    def stop_sequence(self) -> str | None:
        """Which of the request's stop strings ended the answer; None for end of turn.

        Engines leave the stop string out of the text but keep the tokens that spelled it,
        so the decoded tokens run on past the text exactly by the stop string. An answer
        that ended at its end-of-turn token runs on by nothing (special tokens are skipped).
        """
        if self._stop_sequence is None:
            self._stop_sequence = (self._matched_stop(),)
        return self._stop_sequence[0]

    def _matched_stop(self) -> str | None:
        stops = self.request.params.stop
        if self.finish_reason != "stop" or not stops or not self._token_ids:
            return None
        decoded = self.service.engine.detokenize(self._token_ids, skip_special_tokens=True)
        text = self.text
        rest = decoded.removeprefix(text)
        starting = [s for s in stops if rest.startswith(s)]
        if starting:
            return max(starting, key=len)
        found = [(rest.find(s), s) for s in stops if s in rest]
        return min(found)[1] if found else None
