"""A scripted Engine for protocol tests: no OpenVINO, deterministic, observable.

``FakeEngine`` goes through the real :class:`~vinolm.engines.base.Generation` machinery
(worker thread, sync and async iteration, ``cancel()``), so a server test exercises the
same streaming and cancellation paths as production. One character is one token
(``ord``), which makes token counts easy to predict in assertions.

    engine = FakeEngine()
    engine.enqueue("Paris is the capital.")   # the next request answers this
    engine.delay = 0.01                       # seconds per token
    engine.gate.clear()                       # hold every generation until gate.set()
    engine.fail_after = 3                     # raise EngineError after 3 tokens

``RecordingMetrics`` is a ServerMetrics a test can wait on (``wait_for(predicate)``)
instead of sleeping, e.g. until the running gauge is back to 0 after a cancel.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vinolm.engines.base import Emit, Engine, EngineOptions
from vinolm.errors import EngineError, InvalidRequest
from vinolm.server.metrics import ServerMetrics
from vinolm.types import Chunk, Message, Metrics, Request

EOS = 0


@dataclass
class FakeModel:
    """The little of PreparedModel the base Engine reads."""

    name: str = "fake-model"
    context_length: int = 256
    eos_token_ids: list[int] = field(default_factory=lambda: [EOS])
    info: dict[str, Any] = field(default_factory=dict)  # its vinolm.json: empty, as for a folder made elsewhere
    weights: dict[str, Any] = field(default_factory=dict)  # no compressed weights to compile for


class FakeEngine(Engine):
    name = "fake"
    supports_logprobs = False
    supports_top_logprobs = False

    def __init__(self, model: FakeModel | None = None, default: str = "Hello from the fake engine.",
                 delay: float = 0.0, logprobs: bool = False) -> None:
        super().__init__(model or FakeModel(), EngineOptions(batching=True))  # type: ignore[arg-type]
        self.default = default
        self.delay = delay
        self.supports_logprobs = self.supports_top_logprobs = logprobs
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()    # set when any generation begins producing
        self.requests: list[Request] = []   # every request that reached _produce
        self.cancelled_requests = 0
        self.cancelled_event = threading.Event()  # set when any generation saw its cancel
        self.fail_after: int | None = None
        self._script: list[str] = []
        self._lock = threading.Lock()

    # -- scripting -----------------------------------------------------------------------
    def enqueue(self, *texts: str) -> None:
        """Answers for the next requests, in order; afterwards ``default`` is used."""
        with self._lock:
            self._script.extend(texts)

    def _next_text(self) -> str:
        with self._lock:
            return self._script.pop(0) if self._script else self.default

    # -- Engine interface ------------------------------------------------------------------
    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [ord(c) for c in text]

    def detokenize(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(chr(i) for i in ids if not (skip_special_tokens and i == EOS))

    def format_chat(self, messages: list[Message]) -> str:
        return "".join(f"<{m.role}>{m.content}\n" for m in messages) + "<assistant>"

    def _produce(self, request: Request, emit: Emit, cancelled: threading.Event) -> Metrics:
        with self._lock:
            self.requests.append(request)
        prompt_ids = self.tokenize(self.prompt_text(request))
        if len(prompt_ids) >= self.context_length:
            raise InvalidRequest(
                f"the prompt has {len(prompt_ids)} tokens but the model's context is "
                f"{self.context_length} tokens", param="prompt" if request.prompt is not None else "messages")
        self.started.set()
        while not self.gate.wait(0.01):
            if cancelled.is_set():
                break
        metrics = Metrics(input_tokens=len(prompt_ids))
        metrics.output_tokens = self._emit_text(request, emit, cancelled)
        return metrics

    def _emit_text(self, request: Request, emit: Emit, cancelled: threading.Event) -> int:
        """Emit the scripted text one character per step; return the token count."""
        params = request.params
        text = self._next_text()
        if params.ignore_eos:
            text = (text * (params.max_new_tokens // max(len(text), 1) + 1))[: params.max_new_tokens]
        for count, char in enumerate(text, 1):
            if cancelled.is_set():
                with self._lock:
                    self.cancelled_requests += 1
                self.cancelled_event.set()
                emit(Chunk("", [], finish_reason="cancelled"))
                return count - 1
            if self.fail_after is not None and count > self.fail_after:
                raise EngineError("the fake engine failed on purpose")
            if any(text.startswith(stop, count - 1) for stop in params.stop):
                emit(Chunk("", [], finish_reason="stop"))  # the stop string itself is not sent
                return count - 1
            if self.delay:
                time.sleep(self.delay)
            reason = "length" if count >= params.max_new_tokens else None
            emit(self._chunk(char, reason, params.top_logprobs))
            if reason:
                return count
        emit(Chunk("", [EOS], finish_reason="stop"))
        return len(text) + 1

    def _chunk(self, char: str, reason: str | None, top: int = 0) -> Chunk:
        """With logprobs: the chosen character at -0.25, then ``top`` alternatives: itself and
        the characters after it, each a little less likely."""
        logprobs = [-0.25] if self.supports_logprobs else None
        tops = [[(ord(char) + k, -0.25 - k) for k in range(top)]] if self.supports_logprobs and top else None
        return Chunk(char, [ord(char)], finish_reason=reason, logprobs=logprobs,  # type: ignore[arg-type]
                     top_logprobs=tops)


class RecordingMetrics(ServerMetrics):
    """ServerMetrics that lets a test wait for a state instead of sleeping."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = threading.Condition()

    def _notify(self) -> None:
        with self.changed:
            self.changed.notify_all()

    def set_gauges(self, running: int, queued: int, model: str = "") -> None:
        super().set_gauges(running, queued, model)
        self._notify()

    def request_done(self, protocol: str, status: str) -> None:
        super().request_done(protocol, status)
        self._notify()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        with self.changed:
            return self.changed.wait_for(predicate, timeout)
