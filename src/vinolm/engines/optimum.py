"""The optimum engine: optimum-intel's ``OVModelForCausalLM`` driven by transformers' ``generate``.

It offers every decoding option transformers knows and, because it runs the same IR
through a loop nobody here wrote, it is the reference the genai and native engines are
checked against (see the parity tests). As in the tutorials, a streamer receives each
new token and a stopping criterion ends generation on stop strings and cancellation;
the text comes from our own ``TextStreamer``, so stop strings and UTF-8 boundaries
behave as on every other engine.

torch, transformers and optimum are imported at the top of this module on purpose: the
registry imports it only when ``--engine optimum`` is chosen, and a missing library
then becomes one clear error instead of a traceback.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from vinolm.engines.base import Emit, Engine, EngineOptions, PreparedInput
from vinolm.engines.common import finish_reason_for, finish_sequence, load_error
from vinolm.engines.constraints import TokenMask, compile_constraint, vocabulary_for
from vinolm.engines.streaming import TextStreamer
from vinolm.errors import EngineError
from vinolm.kernels import add_to_optimum
from vinolm.models import PreparedModel
from vinolm.types import Chunk, FinishReason, GenerationParams, Metrics, Request

try:
    import torch
    from optimum.intel import OVModelForCausalLM  # type: ignore[import-untyped]
    from transformers import (
        AutoTokenizer,
        GenerationConfig,
        LogitsProcessor,
        RepetitionPenaltyLogitsProcessor,
        StoppingCriteria,
    )
    from transformers.generation.streamers import BaseStreamer
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise EngineError(
        f"the optimum engine needs torch, transformers and optimum-intel ({exc.name} is missing): "
        "pip install 'vinolm[export]' && pip install --no-deps optimum-intel"
    ) from exc


class _Sequence:
    """One returned sequence while it streams: its text, its length, why it ended."""

    def __init__(self, index: int, text: TextStreamer) -> None:
        self.index = index
        self.text = text
        self.count = 0
        self.reason: FinishReason | None = None

    def advance(self, token: int, prepared: PreparedInput, cancelled: threading.Event) -> Chunk:
        self.count += 1
        reason = finish_reason_for(token, self.count, prepared)
        delta = "" if token in prepared.stop_token_ids else self.text.push(token)
        if self.text.stopped:
            reason = "stop"
        elif reason is None and cancelled.is_set():
            reason = "cancelled"
        return self._chunk(delta, [token], reason)

    def with_logprobs(self, chunk: Chunk, logprobs: torch.Tensor, params: GenerationParams) -> Chunk:
        """Add the chosen token's logprob and the top alternatives from this row's step."""
        token = chunk.token_ids[0]
        if params.logprobs:
            chunk.logprobs = [float(logprobs[token])]
        if params.top_logprobs:
            values, ids = torch.topk(logprobs, params.top_logprobs)
            chunk.top_logprobs = [list(zip(ids.tolist(), values.tolist(), strict=True))]
        return chunk

    def end(self, cancelled: threading.Event) -> Chunk:
        """The last chunk when generate returned before this sequence saw its end."""
        return self._chunk("", [], "cancelled" if cancelled.is_set() else "stop")

    def _chunk(self, delta: str, ids: list[int], reason: FinishReason | None) -> Chunk:
        if reason and not self.text.stopped:
            delta += self.text.flush()
        self.reason = reason
        return Chunk(delta, ids, index=self.index, finish_reason=reason)


class _ChunkStreamer(BaseStreamer):
    """transformers' streamer for one request: turns each step's tokens into chunks.

    ``generate`` first puts the prompt (skipped), then one token per row and step; rows
    are the ``num_return_sequences`` samples. A finished row keeps receiving padding,
    which is ignored.
    """

    def __init__(
        self, sequences: list[_Sequence], prepared: PreparedInput, emit: Emit,
        cancelled: threading.Event, metrics: Metrics, started: float,
        params: GenerationParams, recorder: _RawLogprobs | None,
    ) -> None:
        self.sequences = sequences
        self.params = params
        self.recorder = recorder
        self.prepared = prepared
        self.emit = emit
        self.cancelled = cancelled
        self.metrics = metrics
        self.started = started
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        if not self.metrics.ttft:
            self.metrics.ttft = time.perf_counter() - self.started
        for row, (seq, token) in enumerate(zip(self.sequences, value.reshape(-1).tolist())):
            if seq.reason is None:
                chunk = seq.advance(int(token), self.prepared, self.cancelled)
                if self.recorder is not None:
                    chunk = seq.with_logprobs(chunk, self.recorder.last[row], self.params)
                self.emit(chunk)
                self.metrics.output_tokens += 1

    def end(self) -> None:
        for seq in self.sequences:
            if seq.reason is None:
                self.emit(seq.end(self.cancelled))

    def finished(self) -> list[bool]:
        return [seq.reason is not None for seq in self.sequences]


class _StopCriterion(StoppingCriteria):
    """Ends rows whose text hit a stop string, and every row once the request is cancelled.

    transformers checks it after every step, so a cancel takes effect within one token.
    Beam search calls it on 2 x num_beams candidates, which only cancellation ends here
    (stop strings are applied to the finished beams).
    """

    def __init__(self, cancelled: threading.Event, streamer: _ChunkStreamer | None) -> None:
        self.cancelled = cancelled
        self.streamer = streamer

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        rows = input_ids.shape[0]
        if self.cancelled.is_set():
            return torch.ones(rows, dtype=torch.bool)
        if self.streamer is not None and len(self.streamer.sequences) == rows:
            return torch.tensor(self.streamer.finished(), dtype=torch.bool)
        return torch.zeros(rows, dtype=torch.bool)


class _PresenceFrequencyPenalty(LogitsProcessor):
    """OpenAI's additive penalties, which transformers lacks; like the native sampler they
    count generated tokens only, and run before temperature and the top-k/p filters."""

    def __init__(self, prompt_length: int, presence: float, frequency: float) -> None:
        self.prompt_length = prompt_length
        self.presence = presence
        self.frequency = frequency

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        generated = input_ids[:, self.prompt_length :]
        if generated.shape[1] == 0:
            return scores
        ones = torch.ones_like(generated, dtype=scores.dtype)
        counts = torch.zeros_like(scores).scatter_add_(1, generated, ones)
        return scores - counts * self.frequency - (counts > 0).to(scores.dtype) * self.presence


class _RawLogprobs(LogitsProcessor):
    """Keeps each step's log-softmax of the model's own logits (first in the chain, before
    penalties, mask and filters) for the streamer to report: OpenAI's logprobs."""

    def __init__(self) -> None:
        self.last: torch.Tensor | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.last = torch.log_softmax(scores.float(), dim=-1)
        return scores


class _GrammarMask(LogitsProcessor):
    """The constraint's token mask per row (the native engine's ``TokenMask``), after the
    penalties and before temperature and the top-k/p filters, as in the native sampler."""

    def __init__(self, masks: list[TokenMask], prompt_length: int) -> None:
        self.masks = masks
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[1] > self.prompt_length:  # the token chosen last step
            for mask, token in zip(self.masks, input_ids[:, -1].tolist()):
                mask.accept(int(token))
        allowed = torch.from_numpy(np.stack([mask.allowed() for mask in self.masks]))
        return scores.masked_fill(~allowed, float("-inf"))


class OptimumEngine(Engine):
    """optimum-intel + transformers ``generate``; one request at a time."""

    name = "optimum"
    supports_logprobs = True
    supports_top_logprobs = True
    constrains_each_sequence = True

    def __init__(self, model: PreparedModel, options: EngineOptions | None = None) -> None:
        super().__init__(model, options)
        opts = self.options
        props = self.properties
        started = time.perf_counter()
        add_to_optimum(self.extensions)
        try:
            # A local folder needs no local_files_only; with it, optimum looks the path up
            # in the hub cache and warns that it could not.
            self._model = OVModelForCausalLM.from_pretrained(
                str(model.path), device=opts.device, ov_config=props, compile=True
            )
            self._tokenizer = AutoTokenizer.from_pretrained(model.path, local_files_only=True)
        except (RuntimeError, OSError, ValueError) as exc:
            raise load_error("optimum-intel", model.path, exc) from exc
        # GenerationParams are the whole truth about decoding: the model's own defaults
        # (a sampling temperature, say) must not fill in what a request left unset.
        self._pad_id = self._pad_token_id()
        self._model.generation_config = GenerationConfig(pad_token_id=self._pad_id)
        self.load_seconds = time.perf_counter() - started
        self._lock = threading.Lock()

    def _pad_token_id(self) -> int:
        pad = self._tokenizer.pad_token_id
        if pad is None:
            pad = self.model.generation_config.get("pad_token_id", self.model.config.get("pad_token_id"))
        return int(pad if isinstance(pad, int) else (self.eos_token_ids or [0])[0])

    # -- tokens ------------------------------------------------------------------------
    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self._tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])

    def detokenize(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return str(self._tokenizer.decode(ids, skip_special_tokens=skip_special_tokens))

    # -- generation --------------------------------------------------------------------
    def generation_config(self, params: GenerationParams, prepared: PreparedInput) -> GenerationConfig:
        """Our parameters in transformers' terms; every field that matters is set explicitly."""
        cfg = GenerationConfig(
            max_new_tokens=prepared.max_new_tokens,
            do_sample=params.do_sample,
            num_beams=params.num_beams,
            num_return_sequences=params.num_return_sequences,
            eos_token_id=sorted(prepared.stop_token_ids) or None,
            pad_token_id=self._pad_id,
        )
        if params.do_sample:
            cfg.temperature = params.temperature
            cfg.top_p = params.top_p
            cfg.top_k = params.top_k  # 0 switches it off, as in our params
            cfg.min_p = params.min_p or None
        if params.num_beams > 1:
            cfg.length_penalty = params.length_penalty
        return cfg

    def _produce(self, request: Request, emit: Emit, cancelled: threading.Event) -> Metrics:
        started = time.perf_counter()
        prepared = self.prepare_input(request)
        params = request.params
        metrics = Metrics(input_tokens=len(prepared.ids), trimmed_messages=prepared.trimmed_messages)
        recorder = _RawLogprobs() if params.logprobs or params.top_logprobs else None
        with self._lock:
            if cancelled.is_set():
                emit(Chunk("", [], finish_reason="cancelled"))
            elif params.num_beams > 1:
                self._beam_search(params, prepared, emit, cancelled, metrics)
            else:
                sequences = [self._sequence(i, prepared, params) for i in range(params.num_return_sequences)]
                streamer = _ChunkStreamer(sequences, prepared, emit, cancelled, metrics, started, params, recorder)
                self._generate(params, prepared, cancelled, streamer, recorder)
        metrics.total_time = time.perf_counter() - started
        return metrics

    def _sequence(self, index: int, prepared: PreparedInput, params: GenerationParams) -> _Sequence:
        return _Sequence(index, TextStreamer(self.text_decoder(params), prepared.stop_strings, prepared.ids))

    def _processors(
        self, params: GenerationParams, prepared: PreparedInput, recorder: _RawLogprobs | None
    ) -> list[LogitsProcessor]:
        """Our logits processors, in the native sampler's order: raw logprobs, repetition
        penalty, presence/frequency (which transformers lacks), the constraint's mask.
        transformers runs them before its temperature and top-k/p warpers."""
        processors: list[LogitsProcessor] = [recorder] if recorder is not None else []
        if params.repetition_penalty != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
        if params.presence_penalty or params.frequency_penalty:
            processors.append(
                _PresenceFrequencyPenalty(len(prepared.ids), params.presence_penalty, params.frequency_penalty)
            )
        if params.constraint is not None:
            vocabulary = vocabulary_for(self.model.path, self.eos_token_ids,
                                        lambda text: self.tokenize(text, add_special_tokens=False))
            compiled = compile_constraint(params.constraint)
            size = int(self._model.config.vocab_size)
            masks = [TokenMask(vocabulary, compiled, prepared.stop_token_ids, size)
                     for _ in range(params.num_return_sequences)]  # one grammar state per row
            processors.append(_GrammarMask(masks, len(prepared.ids)))
        return processors

    def _generate(
        self, params: GenerationParams, prepared: PreparedInput, cancelled: threading.Event,
        streamer: _ChunkStreamer | None, recorder: _RawLogprobs | None = None,
    ) -> torch.Tensor:
        """One ``generate`` call; returns the new token ids, one row per returned sequence."""
        if params.seed is not None:
            torch.manual_seed(params.seed)  # under the lock: no other request draws meanwhile
        ids = torch.tensor([prepared.ids], dtype=torch.long)
        output = self._model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            generation_config=self.generation_config(params, prepared),
            logits_processor=self._processors(params, prepared, recorder),
            stopping_criteria=[_StopCriterion(cancelled, streamer)],
            streamer=streamer,
        )
        return output[:, len(prepared.ids) :]

    def _beam_search(
        self, params: GenerationParams, prepared: PreparedInput, emit: Emit,
        cancelled: threading.Event, metrics: Metrics,
    ) -> None:
        """transformers streams no beams: the best ``num_return_sequences`` come at the end."""
        rows = self._generate(params, prepared, cancelled, None).tolist()
        for index, ids in enumerate(rows):
            ids = _until_stop(ids, prepared)
            text, reason = finish_sequence(ids, prepared, self._sequence(index, prepared, params).text)
            emit(Chunk(text, ids, index=index, finish_reason="cancelled" if cancelled.is_set() else reason))
            metrics.output_tokens += len(ids)

    def stats(self) -> dict[str, int]:
        return {"running": int(self._lock.locked()), "queued": 0}

    def close(self) -> None:
        with self._lock:
            self._model = None  # type: ignore[assignment]


def _until_stop(ids: list[int], prepared: PreparedInput) -> list[int]:
    """A finished beam up to and including its stop token; what follows is padding."""
    for position, token in enumerate(ids):
        if token in prepared.stop_token_ids:
            return ids[: position + 1]
    return ids
