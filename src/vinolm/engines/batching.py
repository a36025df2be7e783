"""Continuous batching on openvino-genai: one scheduler thread steps the pipeline for all
requests, so concurrent streams advance together token by token.

Requests are added and cancelled only from the scheduler thread (between steps), so the
pipeline is never touched from two threads at once; callers block in ``run`` on their own
worker thread, and tokens reach them through their ``emit`` callback.

openvino-genai's Python binding of ``step()`` keeps the GIL for the whole step (its
``generate()`` releases it, ``step()`` does not), so while the batch computes no other
Python thread runs: not the HTTP event loop, not a request being tokenized. Between steps
the loop yields the GIL once (``time.sleep(0)``); without it the scheduler thread took the
GIL straight back and eight requests sent at once reached the batch over several steps
(``python -m vinolm.bench.burst`` measures both, see docs/benchmarks.md).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from vinolm.engines.base import KV_CACHE_GB, MAX_BATCHED_TOKENS, Emit, PreparedInput
from vinolm.engines.common import first_line
from vinolm.engines.streaming import TextStreamer
from vinolm.errors import EngineError, InvalidRequest
from vinolm.types import Chunk, FinishReason, Metrics

log = logging.getLogger("vinolm.engines")


@dataclass
class _Active:
    prepared: PreparedInput
    config: Any
    streamer: Callable[[], TextStreamer]
    emit: Emit
    cancelled: threading.Event
    metrics: Metrics
    submitted: float = field(default_factory=time.perf_counter)
    handle: Any = None
    texts: dict[int, TextStreamer] = field(default_factory=dict)
    counts: dict[int, int] = field(default_factory=dict)
    ended: set[int] = field(default_factory=set)
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    @property
    def prepared_sequences(self) -> int:
        return max(1, int(self.config.num_return_sequences))

    def finish(self, error: BaseException | None = None) -> None:
        self.error = error
        self.done.set()


class BatchScheduler:
    #: Yield the GIL between steps; off only for ``vinolm.bench.burst``'s comparison.
    yield_gil: ClassVar[bool] = True

    def __init__(
        self, path: Path, device: str, props: dict[str, Any], max_concurrency: int = 8,
        kv_cache_gb: int = KV_CACHE_GB, kv_cache_blocks: int = 0, max_batched_tokens: int = MAX_BATCHED_TOKENS,
        tokens_per_gb: int | None = None,
    ) -> None:
        """``kv_cache_gb`` 0 lets genai grow the cache as requests need it; ``kv_cache_blocks``
        (genai's finer unit, 32 tokens a block on CPU) wins over it when set; ``tokens_per_gb``
        (the model's, estimated) says what a GB holds when the cache is named."""
        import openvino_genai as ov_genai

        self._genai = ov_genai
        #: What the cache holds, as users set it (named when a request outgrows it).
        self.cache_size = (f"{kv_cache_blocks} blocks" if kv_cache_blocks else
                           f"{kv_cache_gb} GB" if kv_cache_gb else "grown as needed")
        if kv_cache_gb and not kv_cache_blocks and tokens_per_gb:
            self.cache_size += f", about {kv_cache_gb * tokens_per_gb:,} tokens of this model"
        config = ov_genai.SchedulerConfig()
        config.enable_prefix_caching = True
        config.max_num_seqs = max_concurrency
        config.cache_size = kv_cache_gb
        config.num_kv_blocks = kv_cache_blocks
        config.max_num_batched_tokens = max_batched_tokens
        config.dynamic_split_fuse = True
        self._build = lambda: ov_genai.ContinuousBatchingPipeline(str(path), config, device, props)
        self.pipe = self._build()
        self.tokenizer = self.pipe.get_tokenizer()
        self._ids = itertools.count()
        self._pending: list[_Active] = []
        self._active: list[_Active] = []
        self._wake = threading.Condition()
        self._closed = False
        self._shut = "the engine is shut down"
        #: Fraction (0..1) of the KV-cache blocks in use after the last step: the gauge
        #: inference gateways route on. Written by the scheduler thread only.
        self.kv_cache_usage = 0.0
        self._thread = threading.Thread(target=self._loop, name="vinolm-batch", daemon=True)
        self._thread.start()

    def run(
        self, prepared: PreparedInput, config: Any, streamer: Callable[[], TextStreamer],
        emit: Emit, cancelled: threading.Event, metrics: Metrics,
    ) -> None:
        """Queue one request and block until it finished, failed or was cancelled."""
        item = _Active(prepared, config, streamer, emit, cancelled, metrics)
        with self._wake:
            if self._closed:
                raise EngineError(self._shut)
            self._pending.append(item)
            self._wake.notify()
        while not item.done.wait(0.05):
            if cancelled.is_set():
                with self._wake:
                    self._wake.notify()
        if item.error is not None:
            raise item.error

    def stats(self) -> dict[str, int]:
        with self._wake:
            return {"running": len(self._active), "queued": len(self._pending)}

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout=30)

    # -- scheduler thread ----------------------------------------------------------------
    def _loop(self) -> None:
        import numpy as np
        import openvino as ov

        while True:
            if self.yield_gil:
                time.sleep(0)  # step() holds the GIL (see the module docstring): let other threads run
            with self._wake:
                while not self._closed and not self._pending and not self._active:
                    self._wake.wait()
                if self._closed:
                    break
                new, self._pending = self._pending, []
            for item in new:
                if item.cancelled.is_set():
                    item.emit(Chunk("", [], finish_reason="cancelled"))
                    item.finish()
                    continue
                ids = ov.Tensor(np.asarray([item.prepared.ids], dtype=np.int64))
                item.handle = self.pipe.add_request(next(self._ids), ids, item.config)
                self._active.append(item)
            self._step()
        for item in self._pending + self._active:
            item.finish(EngineError("the engine shut down before the request finished"))

    def _step(self) -> None:
        try:
            if self.pipe.has_non_finished_requests():
                self.pipe.step()
                # genai reports a percentage of the blocks used in the step just run
                self.kv_cache_usage = self.pipe.get_metrics().cache_usage / 100.0
        except Exception as exc:  # noqa: BLE001 - one bad step fails every request in it, not the server
            failed, self._active = self._active, []
            for item in failed:
                item.finish(exc)  # Generation logs the library's words and tells the caller
            self._restart()
            return
        still = []
        for item in self._active:
            try:
                over = self._poll(item)
            except InvalidRequest as exc:
                item.finish(exc)
                continue
            if over:
                item.finish()
            else:
                still.append(item)
        with self._wake:
            self._active = still

    def _restart(self) -> None:
        """A fresh pipeline after a failed step. genai leaves the one whose step threw mid-schedule
        (every later step fails its "already in scheduling phase" check): kept, one bad request
        would fail every request after it until the server restarts. The prefix cache goes with it."""
        log.warning("openvino-genai failed a batch step; reloading the model's pipeline")
        self.pipe = None
        try:
            self.pipe = self._build()
        except Exception as exc:  # noqa: BLE001 - the reason goes to every request from now on
            log.error("reloading the pipeline failed: %s", exc)
            with self._wake:
                self._closed = True
                self._shut = f"the engine failed and could not reload its pipeline: {first_line(exc)}"

    def _poll(self, item: _Active) -> bool:
        """Emit what ``item`` produced in the last step; True when it is over."""
        status = item.handle.get_status()
        if item.cancelled.is_set() and status == self._genai.GenerationStatus.RUNNING:
            item.handle.cancel()
            item.emit(Chunk("", [], finish_reason="cancelled"))
            return True
        if item.handle.can_read():
            for index, output in sorted(item.handle.read().items()):
                self._emit_tokens(item, index, output)
        if item.ended and len(item.ended) >= item.prepared_sequences:
            if status == self._genai.GenerationStatus.RUNNING:
                item.handle.stop()  # we saw a stop string genai does not know about
            return True
        if status == self._genai.GenerationStatus.RUNNING:
            return False
        if status == self._genai.GenerationStatus.IGNORED:
            self._outgrew_cache(item)
        elif status != self._genai.GenerationStatus.FINISHED:
            item.emit(Chunk("", [], finish_reason="cancelled"))
        return True

    def _outgrew_cache(self, item: _Active) -> None:
        """genai gives up on ("ignores") a sequence that needs more KV blocks than the whole
        cache holds. Before its first token that is the request's size against this server's
        setting, a 400 to resend smaller; after it, the answer ends as at the context's end."""
        if not item.counts:
            raise InvalidRequest(
                f"the prompt ({len(item.prepared.ids)} tokens) does not fit in this server's KV cache "
                f"({self.cache_size}): send a shorter one, or start the server with a larger --kv-cache-gb"
            )
        for index in range(item.prepared_sequences):
            if index not in item.ended:
                text = item.texts.get(index)
                item.emit(Chunk(text.flush() if text else "", [], index=index, finish_reason="length"))
                item.ended.add(index)

    def _emit_tokens(self, item: _Active, index: int, output: Any) -> None:
        """Stream one read of sequence ``index``; its tokens' log-probabilities go along when
        the request asked genai for them (``logprobs`` in its config), one per token id."""
        tokens = list(output.generated_ids)
        logprobs = list(output.generated_log_probs) if item.config.logprobs else None
        text = item.texts.setdefault(index, item.streamer())
        if index not in item.counts:
            item.counts[index] = 0
            if not item.metrics.ttft:
                item.metrics.ttft = time.perf_counter() - item.submitted
        reason = _reason(self._genai, output.finish_reason)
        pieces: list[str] = []
        for token in tokens:
            item.counts[index] += 1
            if token in item.prepared.stop_token_ids:
                reason = "stop"
                break
            pieces.append(text.push(token))
            if text.stopped:
                reason = "stop"
                break
        if reason is not None and not text.stopped:
            pieces.append(text.flush())
        item.metrics.output_tokens = sum(item.counts.values())
        if pieces or reason:
            item.emit(Chunk("".join(pieces), tokens, index=index, finish_reason=reason, logprobs=logprobs))
        if reason is not None:
            item.ended.add(index)


def _reason(genai: Any, code: Any) -> FinishReason | None:
    if code == genai.GenerationFinishReason.LENGTH:
        return "length"
    if code == genai.GenerationFinishReason.STOP:
        return "stop"
    return None
