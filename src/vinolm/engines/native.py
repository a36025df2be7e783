"""The native engine: the OpenVINO runtime, openvino-tokenizers and numpy, nothing else.

A request is four named steps, each small enough to time on its own:

    reuse   keep the part of the KV state the new prompt starts with (chat turns)
    prefill feed the rest of the prompt, get the last position's logits
    select  penalties, filters and the draw (``sampling.py``)
    decode_step  feed the chosen token(s), get the next logits

The loop between them streams each token through a ``TextStreamer`` and checks
cancellation once per token. Several sampled sequences (n > 1) run as rows of one
batch, finished rows dropped through ``beam_idx``; beam search reorders the rows with
it. Options: any OpenVINO property in ``ov_config``; ``PREFILL_``-prefixed keys apply to
the prompt only, e.g. ``PREFILL_INFERENCE_PRECISION_HINT=bf16`` with
``INFERENCE_PRECISION_HINT=f32`` is the hybrid mode (fast bf16 prompts, fast f32 tokens).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np
import openvino as ov

from vinolm.engines.base import Emit, Engine, EngineOptions, PreparedInput
from vinolm.engines.common import finish_reason_for, finish_sequence, load_error
from vinolm.engines.constraints import TokenMask, compile_constraint, vocabulary_for
from vinolm.engines.lookup import next_count, propose, proposed_tokens
from vinolm.engines.native_model import StatefulLM
from vinolm.engines.native_tokenizer import TokenizerIR
from vinolm.engines.sampling import BeamSearch, Sampler, TokenHistory, log_softmax, top_logprobs
from vinolm.engines.streaming import TextStreamer
from vinolm.errors import InvalidRequest
from vinolm.kernels import add_to_cores
from vinolm.models import PreparedModel
from vinolm.types import Chunk, GenerationParams, Metrics, Request

log = logging.getLogger("vinolm.engines")
#: Prompt lookup matches n-grams of at least 3 tokens (fewer only when max_ngram_size says
#: so): a wrong guess costs a longer pass and a slower next step (OpenVINO prepares every
#: node again when the input shape changes: ~0.7 token steps, 135M), and on the copy task
#: 2-gram matches proposed 36% right (64 passes, 35 misses), longer ones 66-79%; on free
#: generation nearly all matches are 2-grams (25% right).
MIN_NGRAM = 3
#: Proposals start at this many per pass and grow by 2 while all are taken (up to
#: ``num_assistant_tokens``): with 2-gram matches, starting at 10 cost free generation 14%
#: (wrong 10-token guesses before the count shrank), starting at 3 cost it 6% (135M, 5 runs).
FIRST_COUNT = 3


@dataclass
class _Run:
    """What one request's loop needs, in one place."""

    prepared: PreparedInput
    params: GenerationParams
    emit: Emit
    cancelled: threading.Event
    metrics: Metrics
    started: float

    def first_token(self) -> None:
        if not self.metrics.ttft:
            self.metrics.ttft = time.perf_counter() - self.started


class _Sequence:
    """One sampled sequence: its history (for penalties), its text stream, its length and,
    under a constraint, its place in the grammar."""

    def __init__(self, index: int, run: _Run, streamer: TextStreamer, grammar: TokenMask | None) -> None:
        self.index = index
        self.history = TokenHistory(run.prepared.ids)
        self.text = streamer
        self.grammar = grammar
        self.count = 0

    def advance(self, token: int, logprob: float, run: _Run, top: list[tuple[int, float]] | None) -> Chunk:
        """The chunk for ``token``: its new text and, when it ends the sequence, why."""
        self.count += 1
        prepared = run.prepared
        reason = finish_reason_for(token, self.count, prepared)
        delta = "" if token in prepared.stop_token_ids else self.text.push(token)
        if self.text.stopped:
            reason = "stop"
        elif reason is None and run.cancelled.is_set():
            reason = "cancelled"
        if reason and not self.text.stopped:
            delta += self.text.flush()
        logprobs = [logprob] if run.params.logprobs else None
        return Chunk(delta, [token], index=self.index, finish_reason=reason, logprobs=logprobs,
                     top_logprobs=[top] if top is not None else None)


class NativeEngine(Engine):
    """Runs the stateful IR with a Python token loop; one request at a time."""

    name = "native"
    speculation_kinds = ("prompt-lookup",)
    supports_logprobs = True
    supports_top_logprobs = True
    constrains_each_sequence = True

    def __init__(self, model: PreparedModel, options: EngineOptions | None = None) -> None:
        super().__init__(model, options)
        import openvino_tokenizers  # noqa: F401  (registers the tokenizer operations)

        opts = self.options
        props = self.properties
        started = time.perf_counter()
        core = ov.Core()
        add_to_cores([core], self.extensions)
        try:
            self.text = TokenizerIR(core, model.path)
            self.lm = StatefulLM(core, model.path / "openvino_model.xml", opts.device, props, model.context_length,
                                 mirror=opts.speculation is not None)
        except RuntimeError as exc:
            raise load_error("OpenVINO", model.path, exc) from exc
        spec = opts.speculation
        self._proposals = proposed_tokens(spec, opts.device) if spec else 0
        if spec is not None and (why := self.lm.inexact_checks()) is not None:
            log.warning("prompt lookup on %s may answer otherwise than plain decoding where two tokens nearly "
                        "tie: %s", model.name, why)
        self.load_seconds = time.perf_counter() - started
        self._lock = threading.Lock()

    # -- tokens ------------------------------------------------------------------------
    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.text.encode(text, add_special_tokens)

    def detokenize(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.text.decode(ids, skip_special_tokens)

    # -- generation --------------------------------------------------------------------
    def check(self, request: Request) -> None:
        super().check(request)
        p = request.params
        if p.num_beams > 1 and (p.repetition_penalty != 1.0 or p.presence_penalty or p.frequency_penalty):
            raise InvalidRequest(
                "the native engine's beam search applies no penalties; drop them or use --engine genai",
                param="num_beams",
            )

    def _produce(self, request: Request, emit: Emit, cancelled: threading.Event) -> Metrics:
        started = time.perf_counter()
        prepared = self.prepare_input(request)
        metrics = Metrics(input_tokens=len(prepared.ids), trimmed_messages=prepared.trimmed_messages)
        run = _Run(prepared, request.params, emit, cancelled, metrics, started)
        with self._lock:
            if cancelled.is_set():
                emit(Chunk("", [], finish_reason="cancelled"))
            else:
                try:
                    metrics.output_tokens = self._generate(run)
                except BaseException:
                    self.lm.reset()  # the state may hold half a step
                    raise
        metrics.total_time = time.perf_counter() - started
        return metrics

    def _generate(self, run: _Run) -> int:
        """Prefill what the state lacks, then sample or search; returns tokens generated."""
        ids = run.prepared.ids
        run.metrics.cached_tokens = self.lm.reuse(ids)
        logits = self.lm.prefill(ids[run.metrics.cached_tokens :])
        if run.params.num_beams > 1:
            return self._beam_search(run, logits)
        if self.options.speculation is not None:
            return self._lookup(run, logits)
        return self._sample(run, logits)

    def select(self, sampler: Sampler, logits: np.ndarray, row: _Sequence) -> tuple[int, float]:
        """The next token of one sequence (inside its grammar, if it has one) and its logprob."""
        allowed = row.grammar.allowed() if row.grammar is not None else None
        token, logprob = sampler.next_token(logits, row.history, allowed)
        if row.grammar is not None:
            row.grammar.accept(token)
        return token, logprob

    def _sample(self, run: _Run, logits: np.ndarray) -> int:
        """Greedy or sampled decoding of ``num_return_sequences`` rows, streamed."""
        sampler = Sampler(run.params, self.eos_token_ids)
        rows = [self._sequence(i, run, logits.shape[-1]) for i in range(run.params.num_return_sequences)]
        logits = np.broadcast_to(logits, (len(rows), logits.shape[-1]))  # all rows share the prompt
        order: np.ndarray | None = np.zeros(len(rows), dtype=np.int32) if len(rows) > 1 else None
        generated, first = 0, True
        while rows:
            tokens, keep = [], []
            for i, row in enumerate(rows):
                token, logprob = self.select(sampler, logits[i], row)
                top = top_logprobs(logits[i], run.params.top_logprobs) if run.params.top_logprobs else None
                chunk = row.advance(token, logprob, run, top)
                run.emit(chunk)
                if chunk.finish_reason is None:
                    tokens.append(token)
                    keep.append(i)
            run.first_token()
            generated += len(rows)
            if len(keep) < len(rows):  # finished rows leave the batch
                order = np.zeros(len(keep), dtype=np.int32) if first else np.array(keep, dtype=np.int32)
                rows = [rows[i] for i in keep]
            first = False
            if rows:
                logits = self.lm.decode_step(np.array(tokens), order)
                order = None
        return generated

    def _lookup(self, run: _Run, logits: np.ndarray) -> int:
        """Prompt-lookup decoding of one sequence. Each pass feeds the chosen token and the
        tokens proposed after it; every row's token is chosen as a token step would choose
        it (same sampler, history and grammar), and a row counts only while the proposals
        before it were the model's own choices, so the answer is plain decoding's where a
        pass's rows are bit for bit the token steps' (``StatefulLM.inexact_checks`` says
        where not). Rejected tokens are cut out of the state through the model's mirror."""
        spec = self.options.speculation
        assert spec is not None
        limit = run.params.num_assistant_tokens or self._proposals
        count = min(limit, FIRST_COUNT)
        ngram = run.params.max_ngram_size or spec.max_ngram_size
        sampler = Sampler(run.params, self.eos_token_ids)
        row = self._sequence(0, run, logits.shape[-1])
        history = list(run.prepared.ids)
        rows, proposed, generated = logits[None], [], 0
        while True:
            for i, step_logits in enumerate(rows):
                token, logprob = self.select(sampler, step_logits, row)
                top = top_logprobs(step_logits, run.params.top_logprobs) if run.params.top_logprobs else None
                chunk = row.advance(token, logprob, run, top)
                run.emit(chunk)
                run.first_token()
                generated += 1
                history.append(token)
                if chunk.finish_reason is not None or i == len(proposed) or proposed[i] != token:
                    self.lm.reject(len(proposed) - i)
                    run.metrics.draft_accepted += i
                    count = next_count(count, limit, len(proposed), i)
                    break
            if chunk.finish_reason is not None:
                return generated
            proposed = propose(history, count, ngram, min(ngram, MIN_NGRAM))
            run.metrics.draft_tokens += len(proposed)
            rows = self.lm.check([token, *proposed])

    def _sequence(self, index: int, run: _Run, logits_size: int) -> _Sequence:
        streamer = TextStreamer(self.text_decoder(run.params), run.prepared.stop_strings, run.prepared.ids)
        return _Sequence(index, run, streamer, self._grammar(run, logits_size))

    def _grammar(self, run: _Run, logits_size: int) -> TokenMask | None:
        constraint = run.params.constraint
        if constraint is None:
            return None
        vocabulary = vocabulary_for(self.model.path, self.eos_token_ids,
                                    lambda text: self.tokenize(text, add_special_tokens=False))
        return TokenMask(vocabulary, compile_constraint(constraint), run.prepared.stop_token_ids, logits_size)

    def _beam_search(self, run: _Run, logits: np.ndarray) -> int:
        """HF-equivalent beam search over ``num_beams`` rows; whole sequences at the end."""
        p, prepared = run.params, run.prepared
        search = BeamSearch(
            p.num_beams, prepared.max_new_tokens, prepared.stop_token_ids, p.length_penalty,
            p.num_return_sequences,
        )
        logprobs = np.broadcast_to(log_softmax(logits), (p.num_beams, logits.shape[-1]))
        while True:
            tokens, order = search.step(logprobs)
            run.first_token()
            if search.done or run.cancelled.is_set():
                break
            logprobs = log_softmax(self.lm.decode_step(tokens, order))
        self.lm.reset()  # the state holds num_beams rows now
        generated = 0
        for index, (ids, _) in enumerate(search.finalize()):
            streamer = TextStreamer(self.detokenize, prepared.stop_strings, prepared.ids)
            text, reason = finish_sequence(ids, prepared, streamer)
            run.emit(Chunk(text, ids, index=index, finish_reason="cancelled" if run.cancelled.is_set() else reason))
            generated += len(ids)
        return generated

    def stats(self) -> dict[str, int]:
        return {"running": int(self._lock.locked()), "queued": 0}

    def close(self) -> None:
        with self._lock:
            self.lm = None  # type: ignore[assignment]
