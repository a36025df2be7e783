"""The one interface every caller (CLI, chat, server, UI, bench) uses to run a model.

An engine turns a :class:`~vinolm.types.Request` into a :class:`Generation`: a handle
that streams :class:`~vinolm.types.Chunk` objects, can be cancelled from any thread,
and yields :class:`~vinolm.types.Metrics` when done. Engines implement ``_produce``,
a blocking loop that calls ``emit`` for each piece of text and checks ``cancelled``
once per token step; the handle runs it on a worker thread so synchronous and
asyncio callers consume the same stream.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Self

from vinolm.engines import compile_cache
from vinolm.engines.constraints import check_params
from vinolm.engines.ovconfig import check_device, compile_properties, layout_mismatch
from vinolm.errors import EngineError, InvalidRequest, VinolmError
from vinolm.kernels import extensions_for
from vinolm.types import Chunk, FinishReason, GenerationParams, Message, Metrics, Request, Result

if TYPE_CHECKING:
    from vinolm.models import PreparedModel

log = logging.getLogger("vinolm.engines")
Emit = Callable[[Chunk], None]
_DONE = object()


#: Tokens proposed per step unless the request, the server or an engine's own measurements say
#: otherwise (``vinolm.engines.lookup.F32_LOOKUP_PROPOSALS``).
PROPOSED_TOKENS = 5
#: Prompt lookup matches the longest recurring ending of up to this many tokens: a long one
#: finds the place in the input the answer is quoting, where a 3-gram ("of the river") often
#: recurs elsewhere. Copying 18 texts (135M, AVX2 Zen 3, one process, genai): up to 6
#: gained 1.56x plain decoding against 1.48x for 3, ahead on 15 of the 18 texts; 4, 5, 6
#: and 8 were level (1.66-1.71x, another run); free generation cost the same.
MAX_NGRAM = 6


#: The KV cache every request shares, held whole so that it is also the prefix cache: a
#: conversation's history survives other traffic until the pool wraps round. One GB is ~46k
#: tokens of the default model (f16): on an AMX Xeon a 990-token conversation was still cached
#: after 32 other 990-token prompts and gone after 64; with genai's grow-as-needed cache (0) it
#: was gone after 8, at the same throughput and 0.6 GB less RSS at the end (docs/benchmarks.md,
#: section 23). Bigger models hold fewer tokens per GB: ``vinolm serve --kv-cache-gb``.
KV_CACHE_GB = 1
#: Prompt tokens one step may take (genai's default): a long prompt is prefilled in pieces
#: between the other streams' tokens. 1024 gave 5-8% more tokens/s at 8 streams in-process
#: on an AMX Xeon (nothing beyond the noise with the kernels capped at AVX2, nor through the
#: server), and a stream then paused 386 ms while a 990-token prompt went in at once, against
#: 136 ms at 256 (section 23); on a slower CPU the pause grows with the prompt's prefill
#: time. ``vinolm serve --max-batched-tokens``.
MAX_BATCHED_TOKENS = 256


@dataclass(frozen=True)
class Speculation:
    """Speculative decoding: candidate tokens come from n-grams of the prompt (``draft``
    None: prompt lookup, which pays on summarise / extract / rewrite work) or from a smaller
    draft model with the same tokenizer; the main model checks them all in one forward
    pass, so greedy output stays the main model's own."""

    #: A model reference (catalog name, folder, ...) prepared at load like the main model.
    draft: str | None = None
    #: Most tokens proposed per step; None: the engine's measured default for this CPU.
    num_assistant_tokens: int | None = None
    max_ngram_size: int = MAX_NGRAM

    @property
    def kind(self) -> str:
        return "prompt-lookup" if self.draft is None else "draft"


@dataclass
class EngineOptions:
    """How to load: device, OpenVINO properties, and switches an engine may honour."""

    device: str = "CPU"
    ov_config: dict[str, Any] = field(default_factory=dict)
    batching: bool = False
    max_concurrency: int = 8
    #: Continuous batching's shared KV cache and prefill pieces (``KV_CACHE_GB``,
    #: ``MAX_BATCHED_TOKENS``: what each trades); ``kv_cache_blocks`` is genai's finer unit.
    kv_cache_gb: int = KV_CACHE_GB
    kv_cache_blocks: int = 0
    max_batched_tokens: int = MAX_BATCHED_TOKENS
    cache_dir: str | None = None
    #: Compile with vinolm's measured defaults (``ovconfig.device_defaults``) under ``ov_config``;
    #: False leaves everything ``ov_config`` does not set to OpenVINO.
    vinolm_defaults: bool = True
    #: Speculative decoding for every request (genai only); None = plain decoding.
    speculation: Speculation | None = None


@dataclass
class PreparedInput:
    """Token ids to feed and how to stop, after chat formatting and the context budget."""

    ids: list[int]
    max_new_tokens: int
    stop_strings: list[str]
    stop_token_ids: set[int]
    trimmed_messages: int = 0


class Generation:
    """A request in flight. Iterate (sync or async) for chunks; ``cancel()`` from anywhere.

    The producer starts on the first iteration (or ``start()``), so a caller can
    attach to the stream before any token is lost.
    """

    def __init__(self, produce: Callable[[Emit, threading.Event], Metrics]) -> None:
        self._produce = produce
        self._cancelled = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._sink: Callable[[object], None] | None = None
        self._error: BaseException | None = None
        self._first_token_at: float | None = None
        self._started_at = 0.0
        self.metrics = Metrics()
        self._texts: dict[int, list[str]] = {}
        self._ids: dict[int, list[int]] = {}
        self._finish: dict[int, FinishReason] = {}

    # -- producer side -------------------------------------------------------------
    def _emit(self, chunk: Chunk) -> None:
        if self._first_token_at is None and (chunk.token_ids or chunk.text):
            self._first_token_at = time.perf_counter()
        self._texts.setdefault(chunk.index, []).append(chunk.text)
        self._ids.setdefault(chunk.index, []).extend(chunk.token_ids)
        if chunk.finish_reason:
            self._finish[chunk.index] = chunk.finish_reason
        assert self._sink is not None
        self._sink(chunk)

    def _run(self) -> None:
        assert self._sink is not None
        self._started_at = time.perf_counter()
        try:
            metrics = self._produce(self._emit, self._cancelled)
            end = time.perf_counter()
            if not metrics.total_time:
                metrics.total_time = end - self._started_at
            if not metrics.ttft and self._first_token_at is not None:
                metrics.ttft = self._first_token_at - self._started_at
            if not metrics.output_tokens:
                metrics.output_tokens = sum(len(v) for v in self._ids.values())
            self.metrics = metrics
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, re-raised there
            self._error = exc
        finally:
            self._done.set()
            self._sink(_DONE)

    def _start(self, sink: Callable[[object], None]) -> None:
        if self._thread is not None:
            raise RuntimeError("a Generation can be consumed only once")
        self._sink = sink
        self._thread = threading.Thread(target=self._run, name="vinolm-generate", daemon=True)
        self._thread.start()

    # -- consumer side -------------------------------------------------------------
    def cancel(self) -> None:
        """Ask the engine to stop; it does so within one token step."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def __iter__(self) -> Iterator[Chunk]:
        q: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._start(q.put)
        try:
            while (item := q.get()) is not _DONE:
                yield item  # type: ignore[misc]
        finally:
            if not self._done.is_set():
                self.cancel()
        self._raise_if_failed()

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[object] = asyncio.Queue()
        def sink(item: object) -> None:
            try:
                loop.call_soon_threadsafe(q.put_nowait, item)
            except RuntimeError:  # the consumer's loop is closed: nobody is listening any more
                self._cancelled.set()

        self._start(sink)
        try:
            while (item := await q.get()) is not _DONE:
                yield item  # type: ignore[misc]
        finally:
            if not self._done.is_set():
                self.cancel()
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._error is None:
            return
        if isinstance(self._error, VinolmError):
            raise self._error
        # A library's own words (pybind signatures, C++ file names) are no message for a
        # client: they go to the log, the caller gets what failed and where to look.
        log.error("generation failed: %s: %s", type(self._error).__name__, self._error)
        raise EngineError(
            f"generation failed inside the engine ({type(self._error).__name__}); the details are in the log"
        ) from self._error

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def result(self) -> Result:
        """Consume the whole stream (if nobody did) and return the texts and metrics."""
        if self._thread is None:
            for _ in self:
                pass
        else:
            self._done.wait()
            self._raise_if_failed()
        indices = sorted(self._texts) or [0]
        return Result(
            texts=["".join(self._texts.get(i, [])) for i in indices],
            token_ids=[self._ids.get(i, []) for i in indices],
            finish_reasons=[self._finish.get(i, "stop") for i in indices],
            metrics=self.metrics,
        )


class Engine(ABC):
    """Base of the genai, native and optimum engines."""

    name: ClassVar[str]
    #: Whether chunks carry the chosen tokens' ``logprobs`` / the ``top_logprobs`` alternatives
    #: (in the setups ``logprobs_refusal`` does not refuse).
    supports_logprobs: ClassVar[bool] = False
    supports_top_logprobs: ClassVar[bool] = False
    #: One grammar state per returned sequence, so a constraint goes with num_return_sequences > 1.
    constrains_each_sequence: ClassVar[bool] = False
    #: The kinds of ``EngineOptions.speculation`` the engine honours ("prompt-lookup", "draft").
    speculation_kinds: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model: PreparedModel, options: EngineOptions | None = None) -> None:
        self.model = model
        self.options = opts = options or EngineOptions()
        check_device(opts.device)
        if opts.speculation is not None and opts.speculation.kind not in self.speculation_kinds:
            where = "the genai and native engines" if opts.speculation.draft is None else "the genai engine"
            raise InvalidRequest(f"speculative decoding ({opts.speculation.kind}) runs on {where}, not {self.name}",
                                 param="speculation")
        cache = opts.cache_dir or compile_cache.directory()
        #: What the model is compiled with: the cache, vinolm's defaults (for the device and
        #: this export's layout), the user's overrides.
        self.properties = compile_properties(opts.device, opts.ov_config, cache, opts.vinolm_defaults, model.weights)
        compile_cache.make_room(self.properties)
        #: OpenVINO extension libraries the export's operations need (vinolm's q4_1 kernel).
        self.extensions = extensions_for(model.info)
        if (note := layout_mismatch(model.info, opts.device)) is not None:
            log.warning(note)

    # -- text <-> tokens -------------------------------------------------------------
    @abstractmethod
    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text`` as this model's tokenizer produces them."""

    @abstractmethod
    def detokenize(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids``."""

    def format_chat(self, messages: list[Message]) -> str:
        """The model input for a conversation, ending where the assistant speaks next."""
        from vinolm.prompts import render_chat

        return render_chat(self.model.chat_spec, messages)

    @property
    def context_length(self) -> int:
        return self.model.context_length

    @property
    def eos_token_ids(self) -> list[int]:
        return self.model.eos_token_ids

    # -- generation ------------------------------------------------------------------
    def prompt_text(self, request: Request) -> str:
        if request.messages is not None:
            return self.format_chat(request.messages)
        assert request.prompt is not None
        return request.prompt

    def check(self, request: Request) -> None:
        """Reject what this engine cannot do before any work starts (a constraint is
        compiled here, so a bad schema or grammar never reaches a queue)."""
        params = request.params.validated()
        check_params(params, sequences=self.constrains_each_sequence)
        for name in ("logprobs", "top_logprobs"):
            if not getattr(params, name):
                continue
            refusal = self.logprobs_refusal(name, params)
            if refusal is not None:
                raise InvalidRequest(refusal, param=name)
            if params.num_beams > 1:
                raise InvalidRequest(f"beam search returns no {name}; use num_beams 1", param=name)
        self._check_speculation(params)

    def logprobs_refusal(self, name: str, params: GenerationParams) -> str | None:
        """Why ``name`` (``logprobs`` or ``top_logprobs``) cannot be reported for ``params``,
        None when it can; an engine that reports them only in some setups says which."""
        if getattr(self, f"supports_{name}"):
            return None
        return f"the {self.name} engine does not return {name}; use --engine native or optimum"

    def _check_speculation(self, params: GenerationParams) -> None:
        spec = self.options.speculation
        for name in ("num_assistant_tokens", "max_ngram_size"):
            if getattr(params, name) and spec is None:
                raise InvalidRequest(f"{name} needs a model loaded with speculative decoding "
                                     "(vinolm serve --prompt-lookup or --draft-model)", param=name)
        if spec is None:
            return
        if params.max_ngram_size and spec.draft is not None:
            raise InvalidRequest("max_ngram_size is for prompt lookup; this model decodes with a draft model",
                                 param="max_ngram_size")
        if params.num_beams > 1 or params.num_return_sequences > 1:
            param = "num_beams" if params.num_beams > 1 else "num_return_sequences"
            raise InvalidRequest(f"speculative decoding ({spec.kind}) makes one sequence: {param} must be 1",
                                 param=param)

    def text_decoder(self, params: GenerationParams) -> Callable[[list[int]], str]:
        """How streamed ids become text. Under a constraint special tokens stay in: the
        grammar libraries read them as text, so dropping them could break the structure."""
        if params.constraint is None:
            return self.detokenize
        return lambda ids: self.detokenize(ids, skip_special_tokens=False)

    def generate(self, request: Request) -> Generation:
        """Start ``request``; iterate the handle for chunks."""
        self.check(request)
        return Generation(lambda emit, cancelled: self._produce(request, emit, cancelled))

    def complete(self, request: Request) -> Result:
        return self.generate(request).result()

    @abstractmethod
    def _produce(self, request: Request, emit: Emit, cancelled: threading.Event) -> Metrics:
        """Run the request to the end, calling ``emit`` per text piece; stop when ``cancelled``."""

    def prepare_input(self, request: Request) -> PreparedInput:
        """Format, tokenize and budget the request the same way for every engine.

        Chat history that does not fit is trimmed (oldest turns first); a raw prompt
        that does not fit is an error; ``max_new_tokens`` is capped at what is left of
        the context so generation ends with ``length`` instead of failing midway.
        """
        params = request.params
        stops = list(params.stop)
        trimmed = 0
        if request.messages is not None:
            from vinolm.prompts import fit_messages

            spec = self.model.chat_spec
            _, ids, trimmed = fit_messages(
                spec, request.messages, lambda text: self.tokenize(text, add_special_tokens=False),
                self.context_length, min(params.max_new_tokens, self.context_length // 2),
            )
            stops += [s for s in spec.stop_strings if s not in stops]
        else:
            assert request.prompt is not None
            ids = self.tokenize(request.prompt, add_special_tokens=request.add_special_tokens)
            if len(ids) >= self.context_length:
                raise InvalidRequest(
                    f"the prompt has {len(ids)} tokens but the model's context is "
                    f"{self.context_length} tokens",
                    param="prompt",
                )
        stop_ids = set(params.stop_token_ids)
        if not params.ignore_eos:
            stop_ids |= set(self.eos_token_ids)
        max_new = max(1, min(params.max_new_tokens, self.context_length - len(ids)))
        return PreparedInput(ids, max_new, stops, stop_ids, trimmed)

    def close(self) -> None:
        """Free the model. Engines holding threads or pipelines override this."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
