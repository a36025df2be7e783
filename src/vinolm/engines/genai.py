"""The default engine: openvino-genai.

One stream at a time goes through ``LLMPipeline``; with ``batching`` all requests share a
``ContinuousBatchingPipeline`` driven by one scheduler thread (see ``batching.py``). In
both, vinolm tokenizes and formats the input itself and detokenizes the streamed ids with
its own ``TextStreamer``, so stop strings and UTF-8 boundaries behave the same on every
engine.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from vinolm.engines import compile_cache
from vinolm.engines.base import Emit, Engine, EngineOptions, PreparedInput
from vinolm.engines.common import finish_reason_for, finish_sequence, load_error
from vinolm.engines.constraints import compile_constraint
from vinolm.engines.genai_logits import sampled_rows_folder
from vinolm.engines.lookup import f32_checks, proposed_tokens
from vinolm.engines.native_tokenizer import VocabLookup
from vinolm.engines.ovconfig import device_base, optimization_capabilities
from vinolm.engines.streaming import TextStreamer
from vinolm.errors import EngineError, InvalidRequest
from vinolm.kernels import extensions_for, genai_properties
from vinolm.models import PreparedModel
from vinolm.types import Chunk, GenerationParams, Metrics, Request

log = logging.getLogger("vinolm.engines")
#: genai's prompt-lookup pipeline checks proposals for every request, and cannot leave one
#: out; in batches that already fill an f32 CPU that costs what it saves (docs/benchmarks.md,
#: section 16: a real Zen 3, vinolm serve --prompt-lookup, 3 proposed tokens).
SHARED_LOOKUP_WARNING = (
    "prompt lookup checks every request's proposals in the shared batches, wrong ones included: on a CPU "
    "without int8 dot products (VNNI) it halved a server's throughput on free generation at 4 or more "
    "concurrent requests (copying a text: 1.2-1.4x for one user, 1.05x for 4-8; an AMD Zen 3, "
    "docs/benchmarks.md section 16); use it where the work quotes its input and few requests share the CPU")
#: The same for a draft model, whose drafting and checks every request's decoding pays for
#: (section 17: a real Zen 3, a 135M drafter for a 1.1B model, 2 proposed tokens).
SHARED_DRAFT_WARNING = (
    "a draft model drafts and checks tokens for every request in the shared batches: on a CPU without int8 "
    "dot products (VNNI) it cost a server 12-23% of its throughput at 4 concurrent requests while one user "
    "gained 1.1-1.3x (an AMD Zen 3, docs/benchmarks.md section 17); use it where few requests share the CPU")


class GenaiEngine(Engine):
    name = "genai"
    supports_logprobs = True
    speculation_kinds = ("prompt-lookup", "draft")

    def __init__(self, model: PreparedModel, options: EngineOptions | None = None) -> None:
        super().__init__(model, options)
        import openvino_genai as ov_genai

        self._genai = ov_genai
        opts = self.options
        spec = opts.speculation
        #: Tokens proposed a step unless a request says: the server's count, else this CPU's
        #: (found once: the CPU kind reads /proc/cpuinfo).
        self._proposals = proposed_tokens(spec, opts.device) if spec else 0
        # Every pipeline but a plain LLMPipeline asked for SDPA runs paged attention.
        sdpa = str(self.properties.get("ATTENTION_BACKEND", "")).upper() == "SDPA"
        paged = opts.batching or spec is not None or not sdpa
        if paged:
            self.properties = compile_cache.for_paged_attention(self.properties, opts.device)
        if paged and (problem := _paged_f16_problem(self.properties, opts.device)) is not None:
            raise EngineError(problem)
        props = {**self.properties, **self._speculation_properties(), **genai_properties(self.extensions)}
        # A q4_1 export's output layer is vinolm's, which genai does not slice: a paged pipeline loads it wired to
        # genai's row indices (genai_logits.py), or every prompt row would get logits.
        path = sampled_rows_folder(model.path) if paged and self.extensions else model.path
        started = time.perf_counter()
        try:
            with compile_cache.watching_paged_loads(self.properties, opts.device) if paged else nullcontext():
                self._load(model, path, props)
        except RuntimeError as exc:
            raise load_error("openvino-genai", model.path, exc) from exc
        self.load_seconds = time.perf_counter() - started
        self._lock = threading.Lock()
        # Streaming detokenizes once or twice per token: a Python lookup where the graph
        # is one (byte-level BPE) skips genai's detokenizer inference each time.
        self._lookup = VocabLookup.from_folder(model.path)

    def _load(self, model: PreparedModel, path: Path, props: dict[str, Any]) -> None:
        opts = self.options
        if opts.batching:
            from vinolm.engines.batching import BatchScheduler

            self._scheduler: BatchScheduler | None = BatchScheduler(
                path, opts.device, props, max_concurrency=opts.max_concurrency, kv_cache_gb=opts.kv_cache_gb,
                kv_cache_blocks=opts.kv_cache_blocks, max_batched_tokens=opts.max_batched_tokens,
                tokens_per_gb=_tokens_per_gb(model, props),
            )
            log.info("%s: KV cache %s, shared by its requests and kept as their prefix cache", model.name,
                     self._scheduler.cache_size)
            self._tokenizer = self._scheduler.tokenizer
            self._pipe = None
        else:
            self._scheduler = None
            self._pipe = self._genai.LLMPipeline(str(path), opts.device, **props)
            self._tokenizer = self._pipe.get_tokenizer()

    def _speculation_properties(self) -> dict[str, Any]:
        """genai turns speculative decoding on at load: a pipeline built with it expects
        every request's config to say how many tokens to propose."""
        spec = self.options.speculation
        if spec is None:
            return {}
        log.info("%s: %d tokens proposed a step%s", spec.kind, self._proposals,
                 "" if spec.num_assistant_tokens else " (this CPU's default; --num-assistant-tokens to change)")
        if self.options.batching and self.options.max_concurrency > 1 and f32_checks(self.options.device):
            log.warning(SHARED_LOOKUP_WARNING if spec.draft is None else SHARED_DRAFT_WARNING)
        if spec.draft is None:
            return {"prompt_lookup": True}
        from vinolm.kernels import Q4_1
        from vinolm.models import DEFAULT_WEIGHT_FORMAT, default_weight_format, locate_source, prepare

        # openvino-genai 2026.4 reads a draft with a Core that has not loaded the pipeline's extension libraries
        # and compiles it with properties the CPU plugin refuses them in: a q4_1 draft cannot load. Where q4_1
        # is only prepare's default, the draft is made in INT8 instead.
        own = DEFAULT_WEIGHT_FORMAT if default_weight_format(locate_source(spec.draft)) == Q4_1 else None
        draft = prepare(spec.draft, own, progress=lambda _: None)
        if extensions_for(draft.info):
            raise InvalidRequest(f"{spec.draft} is in vinolm's q4_1 format, which openvino-genai cannot load as a "
                                 "draft model: export the draft with --weight-format int8")
        return {"draft_model": self._genai.draft_model(str(draft.path), self.options.device, **self.properties)}

    # -- tokens ------------------------------------------------------------------------
    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        encoded = self._tokenizer.encode(text, add_special_tokens=add_special_tokens)
        return encoded.input_ids.data[0].tolist()

    def detokenize(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        if self._lookup is not None:
            return self._lookup.decode(ids, skip_special_tokens)
        return self._tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    # -- generation --------------------------------------------------------------------
    def logprobs_refusal(self, name: str, params: GenerationParams) -> str | None:
        """genai hands out the chosen token's log-probability (log-softmax of the raw logits,
        before penalties, temperature and grammar: native's value) only in the batching
        pipeline's outputs; LLMPipeline keeps just each sequence's sum, and no path has the
        alternatives. After a draft model's proposal is rejected, genai reports a sampled
        token's value under its corrected distribution, not the model's."""
        if name == "top_logprobs":
            return ("the genai engine reports only the chosen token's log-probability, not top_logprobs "
                    "alternatives (a completion's logprobs above 0); --engine native reports alternatives")
        if not self.options.batching:
            return ("the genai engine reports logprobs only with continuous batching (vinolm serve, "
                    "batching=True in the Python API); --engine native reports them too")
        spec = self.options.speculation
        if spec is not None and spec.draft is not None and params.do_sample:
            return ("with a draft model genai's logprobs of sampled tokens are not the model's; "
                    "decode greedily or use --engine native")
        return None

    def generation_config(self, params: GenerationParams, prepared: PreparedInput) -> Any:
        cfg = self._genai.GenerationConfig()
        cfg.max_new_tokens = prepared.max_new_tokens
        cfg.ignore_eos = params.ignore_eos
        cfg.stop_token_ids = set(prepared.stop_token_ids)
        if self.eos_token_ids:
            cfg.eos_token_id = self.eos_token_ids[0]
        cfg.repetition_penalty = params.repetition_penalty
        cfg.presence_penalty = params.presence_penalty
        cfg.frequency_penalty = params.frequency_penalty
        cfg.num_return_sequences = params.num_return_sequences
        if params.logprobs:
            cfg.logprobs = 1  # genai's only setting: the chosen token's log-probability
        if params.do_sample:
            cfg.do_sample = True
            cfg.temperature = params.temperature
            cfg.top_p = params.top_p
            if params.top_k:
                cfg.top_k = params.top_k
            cfg.min_p = params.min_p
            # genai's seed is fixed (0) unless set: every unseeded request, and each of n choices
            # (separate requests), would draw the same sample
            cfg.rng_seed = params.seed if params.seed is not None else random.getrandbits(63)
        elif params.num_beams > 1:
            cfg.num_beams = params.num_beams
            cfg.num_beam_groups = 1
            cfg.length_penalty = params.length_penalty
        spec = self.options.speculation
        if spec is not None:
            cfg.num_assistant_tokens = params.num_assistant_tokens or self._proposals
            if spec.draft is None:
                cfg.max_ngram_size = params.max_ngram_size or spec.max_ngram_size
        if params.constraint is not None:  # compiled (and cached) by check(): the same grammar text
            cfg.structured_output_config = compile_constraint(params.constraint).genai_config(self._genai)
        return cfg

    def _produce(self, request: Request, emit: Emit, cancelled: threading.Event) -> Metrics:
        started = time.perf_counter()
        prepared = self.prepare_input(request)
        cfg = self.generation_config(request.params, prepared)
        metrics = Metrics(input_tokens=len(prepared.ids), trimmed_messages=prepared.trimmed_messages)
        decode = self.text_decoder(request.params)
        if self._scheduler is not None:
            self._scheduler.run(prepared, cfg, lambda: TextStreamer(decode, prepared.stop_strings), emit,
                                cancelled, metrics)
        elif request.params.num_beams > 1 or request.params.num_return_sequences > 1:
            self._run_multi(prepared, cfg, emit, cancelled, metrics)
        else:
            self._run_stream(prepared, cfg, TextStreamer(decode, prepared.stop_strings), emit, cancelled,
                             metrics, started)
        metrics.total_time = time.perf_counter() - started
        return metrics

    def _run_stream(
        self, prepared: PreparedInput, cfg: Any, text: TextStreamer, emit: Emit, cancelled: threading.Event,
        metrics: Metrics, started: float,
    ) -> None:
        genai = self._genai
        state: dict[str, Any] = {"count": 0, "reason": None}

        def on_token(token: int) -> Any:
            if state["count"] == 0:
                metrics.ttft = time.perf_counter() - started
            state["count"] += 1
            reason = finish_reason_for(token, state["count"], prepared)
            delta = "" if token in prepared.stop_token_ids else text.push(token)
            if text.stopped:
                reason = "stop"
            if cancelled.is_set():
                reason = "cancelled"
            if reason:
                delta += "" if text.stopped else text.flush()
                state["reason"] = reason
            emit(Chunk(delta, [token], finish_reason=reason))
            if reason == "cancelled":
                return genai.StreamingStatus.CANCEL
            return genai.StreamingStatus.STOP if reason else genai.StreamingStatus.RUNNING

        streamer = _CallbackStreamer(genai, on_token)
        with self._lock:
            self._pipe.generate(_tokenized(genai, prepared.ids), cfg, streamer)
        if state["reason"] is None:  # ended without our say: EOS seen by genai or no tokens
            emit(Chunk(text.flush(), [], finish_reason="stop"))
        metrics.output_tokens = state["count"]

    def _run_multi(
        self, prepared: PreparedInput, cfg: Any, emit: Emit, cancelled: threading.Event, metrics: Metrics
    ) -> None:
        """Beam search and n > 1: genai returns whole sequences, so emit each at the end."""
        with self._lock:
            result = self._pipe.generate(_tokenized(self._genai, prepared.ids), cfg)
        perf = result.perf_metrics
        metrics.ttft = perf.get_ttft().mean / 1000
        total = 0
        for index, ids in enumerate(result.tokens):
            text, reason = finish_sequence(list(ids), prepared, TextStreamer(self.detokenize, prepared.stop_strings))
            emit(Chunk(text, list(ids), index=index, finish_reason="cancelled" if cancelled.is_set() else reason))
            total += len(ids)
        metrics.output_tokens = total

    def stats(self) -> dict[str, int]:
        return self._scheduler.stats() if self._scheduler else {"running": int(self._lock.locked()), "queued": 0}

    def kv_cache_usage(self) -> float | None:
        """The batching pipeline's KV-cache use (0..1); None without one (nothing to report)."""
        return self._scheduler.kv_cache_usage if self._scheduler else None

    def close(self) -> None:
        if self._scheduler is not None:
            self._scheduler.close()
        self._pipe = None


def _tokenized(genai: Any, ids: list[int]) -> Any:
    import numpy as np
    import openvino as ov

    array = np.asarray([ids], dtype=np.int64)
    return genai.TokenizedInputs(ov.Tensor(array), ov.Tensor(np.ones_like(array)))


class _CallbackStreamer:
    """Adapts a per-token callback to genai's StreamerBase (built lazily: it needs the module)."""

    def __new__(cls, genai: Any, on_token: Any) -> Any:
        class Streamer(genai.StreamerBase):
            def write(self, token: Any) -> Any:
                status = genai.StreamingStatus.RUNNING
                for t in token if isinstance(token, list) else [token]:
                    status = on_token(int(t))
                    if status != genai.StreamingStatus.RUNNING:
                        break
                return status

            def end(self) -> None:
                return None

        return Streamer()


def _tokens_per_gb(model: PreparedModel, props: dict[str, Any]) -> int | None:
    """About how many tokens of ``model`` a GB of its KV cache holds, at the cache precision
    it is compiled with (OpenVINO's own on CPU is u8: a byte a value, plus its scales)."""
    values = model.kv_values_per_token
    width = {"f32": 4, "u8": 1, "i8": 1}.get(str(props.get("KV_CACHE_PRECISION", "u8")).lower(), 2)
    return 2**30 // (values * width) if values else None


def _paged_f16_problem(props: dict[str, Any], device: str) -> str | None:
    """Why these properties would make OpenVINO's paged attention answer garbage, if they
    would: on a CPU that computes f16 (AVX512-FP16, Xeons since Sapphire Rapids), f16 math over
    a KV cache whose keys and values share an f16 or u8 type (OpenVINO's u8 default included)
    gave token 0 at every step on the default model, and other tokens than f32 at 1.1B; mixed
    or f32 caches answered right (OpenVINO 2026.4.1 on an AMX Xeon, docs/benchmarks.md section
    25). The stateful model the other engines run is not affected."""
    if device_base(device) != "CPU" or str(props.get("INFERENCE_PRECISION_HINT", "")).lower() != "f16":
        return None
    kv = str(props.get("KV_CACHE_PRECISION", "u8")).lower()
    key, value = (str(props.get(f"{part}_CACHE_PRECISION", kv)).lower() for part in ("KEY", "VALUE"))
    if key != value or key == "f32" or "FP16" not in optimization_capabilities(device):
        return None
    article = "an" if key.startswith(("f", "i")) else "a"
    return (f"INFERENCE_PRECISION_HINT=f16 with {article} {key} KV cache makes openvino-genai's paged attention answer "
            "garbage on this CPU; add KV_CACHE_PRECISION=f32 (f16 math ran at 0.4x the speed of vinolm's "
            "defaults on an AMX Xeon) or leave the precision to vinolm")
