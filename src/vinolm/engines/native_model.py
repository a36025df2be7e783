"""The stateful LLM behind the native engine, as two steps: ``prefill`` and ``decode_step``.

An optimum-intel export keeps the KV cache in the model's state (one variable per layer
for keys and for values) and takes ``input_ids``, ``attention_mask``, ``position_ids`` and
``beam_idx`` (the cache row each input row continues). This module compiles it, feeds
it through one InferRequest whose decode inputs are preallocated numpy buffers shared
with OpenVINO (a step writes two numbers and wraps one mask view), and remembers which
tokens the state holds, so a prompt that starts with them pays only for its new suffix.

Hybrid precision: prompts are fastest in bf16 (AMX), single tokens in f32, so the model
may be compiled twice; the prefill request hands its state to the decode request.

Cutting positions out of the state (a chat that edits its past, prompt lookup's rejected
tokens) goes through OpenVINO's get_state, which converts the plugin's cache to f32 at
about 0.1 ms per held token (95 ms at 800 tokens, 135M, measured) - eight token steps.
With ``mirror=True`` the model also returns each step's new keys/values, kept on the host
(``KVMirror``), so a cut is one set_state per variable (7 ms at 900 tokens on a Zen 5, 22-36
ms at 650-1000 on a Zen 3). Prompt
lookup's rejected guesses need not even that: the attention mask is an input, so they stay
in the state with 0 in the mask (positions come from ``position_ids``, not from where keys
sit) and are cut out together once they are a share of the state (``COMPACT_SHARE``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
from openvino import opset13

from vinolm.cpu import cpu_kind
from vinolm.errors import EngineError
from vinolm.export.blocks import logits_matmul

#: ``ov_config`` keys with this prefix apply to the prefill variant only (hybrid mode).
PREFILL_PREFIX = "PREFILL_"
#: What decides how the state is stored: both variants must agree to share it.
KV_LAYOUT_PROPERTIES = (
    "KV_CACHE_PRECISION", "KEY_CACHE_PRECISION", "VALUE_CACHE_PRECISION",
    "KEY_CACHE_GROUP_SIZE", "VALUE_CACHE_GROUP_SIZE",
)
#: Hybrid mode prefills in bf16 only a prompt of at least this many tokens into an empty
#: state. Measured (SmolLM2-135M INT8, 2 cores): 16 tokens take 32 ms in f32 and 39 ms in
#: bf16, 64 take 78 vs 53. With a cached prefix the f32 variant prefills the suffix:
#: attention over the past dominates there and bf16 gains nothing (64 new tokens after
#: 1024 cached: 534 ms f32, 527 ms bf16 plus ~115 ms of state hand-over both ways).
HYBRID_MIN_PROMPT = 32
#: A prompt that starts with tokens the state holds is fed only from where they end (after
#: trimming what the state holds beyond them). OpenVINO runs tokens fed after a past through
#: its single-token attention kernel, row by row, at a higher cost per token than a fresh
#: prompt's, so the kept prefix must be at least this many times as long as the tokens still
#: to feed, per kind of CPU, else the whole prompt is fed afresh. Measured with the default
#: model (2 cores, 2026-12-06, kept / new tokens from 30 / 900 to 800 / 50): the two level at
#: 1x on AMX (int8 activations make a fresh prompt cheap: keeping 30 of 930 took 1.7x as long
#: as starting over, keeping 800 of 850 was 5.7x faster), at 0.5x with OpenVINO's kernels
#: capped at AVX2_VNNI, AVX2 or AVX512_CORE_BF16 (docs/benchmarks.md section 22).
REUSE_RATIO: dict[str, float] = {"amx": 1.0}
REUSE_RATIO_ELSEWHERE = 0.5
#: Trimming copies the whole state (~0.1 ms per held token, measured) while a fresh
#: prefill costs 1-2.4 ms per token: trim when the kept prefix (long enough against the
#: new tokens, ``REUSE_RATIO``) is also at least 1/16 of what the state holds.
TRIM_COST_RATIO = 16
#: A rejected guess stays in the state, masked out of attention, until masked positions
#: are this share of what the state holds; only then is the state cut back (compacted).
#: A cut costs 22-36 ms, a token step 15-16 (135M, 650-1000 positions, AVX2 Zen 3), and a
#: masked position adds one key to each later step's attention (~0.005 ms).
COMPACT_SHARE = 8
_INT64_MAX = np.iinfo(np.int64).max


def split_phases(props: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``ov_config`` -> (decode properties, prefill properties or None when one variant
    serves both). ``{"PREFILL_INFERENCE_PRECISION_HINT": "bf16"}`` turns hybrid mode on."""
    shared = {k: v for k, v in props.items() if not k.startswith(PREFILL_PREFIX)}
    prefill = {k[len(PREFILL_PREFIX) :]: v for k, v in props.items() if k.startswith(PREFILL_PREFIX)}
    return shared, ({**shared, **prefill} if prefill else None)


#: The input that says how many of the last positions get logits: 1 for a prompt or a
#: token step, k+1 for the pass that checks k tokens proposed by prompt lookup.
LOGITS_ROWS = "vinolm_logits_rows"


def slice_last_position(model: ov.Model) -> None:
    """Make the model return logits for the last ``LOGITS_ROWS`` positions only, as
    openvino-genai does for one: a Slice before the lm_head MatMul, so a 990-token prompt
    computes one row of logits (196 KB) instead of 990 (190 MB)."""
    node = logits_matmul(model)
    if node is None:
        raise EngineError("cannot find the lm_head MatMul before the logits output")
    hidden = node.input_value(0)
    if hidden.get_partial_shape().rank.get_length() != 3:
        return
    rows = opset13.parameter([1], ov.Type.i64, name=LOGITS_ROWS)
    rows.output(0).get_tensor().set_names({LOGITS_ROWS})
    last = opset13.slice(hidden, opset13.negative(rows), np.array([_INT64_MAX]), np.array([1]), np.array([1]))
    node.input(0).replace_source_output(last.output(0))
    model.add_parameters([rows])
    model.validate_nodes_and_infer_types()


@dataclass(frozen=True)
class KVGroup:
    """State variables whose new keys/values have one shape: the model returns them
    stacked along the batch axis as one extra output (one read per inference, not one
    per variable: 60 reads cost 1.2 ms of a 12 ms step at 135M)."""

    ids: tuple[str, ...]
    axis: int  # the sequence axis


def add_kv_outputs(model: ov.Model) -> list[KVGroup]:
    """Return each inference's new keys/values as extra outputs after the logits, one per
    group of same-shaped variables: the second input of the Concat that appends them to
    each variable, stacked along axis 0."""
    groups: dict[tuple[str, int], list[tuple[str, Any]]] = {}
    for sink in model.get_sinks():
        concat = sink.input_value(0).get_node()
        if concat.get_type_name() != "Concat" or concat.get_input_size() != 2:
            raise EngineError("cannot find where the model appends to its KV cache")
        new = concat.input_value(1)
        rank = new.get_partial_shape().rank.get_length()
        axis = int(concat.get_attributes()["axis"]) % rank
        if axis == 0:  # the outputs stack variables along axis 0
            raise EngineError("this model's KV cache grows along its first axis: prompt lookup cannot mirror it")
        groups.setdefault((str(new.get_partial_shape()), axis), []).append((sink.get_variable_id(), new))
    results = [opset13.result(opset13.concat([new for _, new in members], 0)) for members in groups.values()]
    model.add_results(results)
    return [KVGroup(tuple(name for name, _ in members), axis) for (_, axis), members in groups.items()]


class KVMirror:
    """Host copies of the keys/values one row's state holds, appended from every
    inference's extra outputs; ``cut`` writes them back shortened. Kept in f16 where the
    cache is f16 (the plugin rounds them the same way when it stores them; handing f16 back
    halves what ``set_state`` converts: 13 vs 31 ms at 900 positions, 8 KV heads), else
    f32, as the state API speaks. Valid while one row runs: a batch of rows invalidates it."""

    def __init__(self, request: Any, groups: list[KVGroup], first_output: int, dtype: type = np.float32) -> None:
        states = {state.name: state for state in request.query_state()}
        self._groups = groups
        self._states = [[states[name] for name in group.ids] for group in groups]
        self._first = first_output
        self._dtype = dtype
        self._buffers: list[np.ndarray | None] = [None] * len(groups)
        #: One variable's kept positions, contiguous (``set_state`` ignores ROI strides): a
        #: buffer reused cut after cut, not a fresh array per variable (whose page faults
        #: cost more than the copy).
        self._scratch: list[np.ndarray] = [np.empty(0, dtype=dtype) for _ in groups]
        self.length = 0

    def append(self, request: Any, count: int) -> None:
        """Copy the ``count`` positions the last inference added."""
        end = self.length + count
        for i, group in enumerate(self._groups):
            new = request.get_output_tensor(self._first + i).data
            buffer = self._room(i, new, group.axis, end)
            buffer[(slice(None),) * group.axis + (slice(self.length, end),)] = new
        self.length = end

    def cut(self, length: int, keep: np.ndarray | None = None) -> None:
        """Make the state hold positions ``< length`` only, or the ``keep`` positions (in
        order) when some in between are to go."""
        for g, (states, buffer, group) in enumerate(zip(self._states, self._buffers, self._groups, strict=True)):
            assert buffer is not None
            head = (slice(None),) * group.axis
            if keep is not None:
                buffer[head + (slice(0, len(keep)),)] = np.take(buffer, keep, axis=group.axis)
            kept = buffer[head + (slice(0, length),)]
            shape = (1, *kept.shape[1:])
            size = int(np.prod(shape))
            if self._scratch[g].size < size:
                self._scratch[g] = np.empty(2 * size, dtype=self._dtype)
            one = self._scratch[g][:size].reshape(shape)
            for i, state in enumerate(states):
                one[0] = kept[i]
                state.state = ov.Tensor(one, shared_memory=True)  # the plugin copies it into its cache
        self.length = length

    def _room(self, i: int, new: np.ndarray, axis: int, end: int) -> np.ndarray:
        buffer = self._buffers[i]
        if buffer is None or buffer.shape[axis] < end or buffer.shape[:axis] != new.shape[:axis]:
            shape = list(new.shape)
            shape[axis] = max(2 * end, 256)
            grown = np.empty(shape, dtype=self._dtype)
            if buffer is not None and buffer.shape[:axis] == new.shape[:axis]:
                grown[(slice(None),) * axis + (slice(0, self.length),)] = (
                    buffer[(slice(None),) * axis + (slice(0, self.length),)])
            self._buffers[i] = buffer = grown
        return buffer


def _mirror_dtype(compiled: ov.CompiledModel) -> type:
    """f16 where the plugin stores keys and values in f16, else f32 (what it rounds from)."""
    try:
        f16 = all(compiled.get_property(key) == ov.Type.f16 for key in ("KEY_CACHE_PRECISION", "VALUE_CACHE_PRECISION"))
    except RuntimeError:  # a device that does not report them
        return np.float32
    return np.float16 if f16 else np.float32


def _check_stateful(model: ov.Model, xml: Path) -> None:
    names = {name for port in model.inputs for name in port.get_names()}
    missing = {"input_ids", "attention_mask", "position_ids", "beam_idx"} - names
    if missing or not model.get_variables():
        raise EngineError(
            f"{xml} is not a stateful LLM export (missing {', '.join(sorted(missing)) or 'state'}); "
            "export it with optimum-intel's default --task text-generation-with-past, or use --engine genai"
        )


def kv_layout(compiled: ov.CompiledModel) -> dict[str, str]:
    """The compiled model's KV-cache storage properties (those it reports)."""
    layout = {}
    for key in KV_LAYOUT_PROPERTIES:
        try:
            layout[key] = str(compiled.get_property(key))
        except RuntimeError:
            continue
    return layout


def hand_over(pairs: list[tuple[Any, Any]]) -> None:
    """Copy every key/value state from one request to another (``(source, target)``
    pairs of VariableState). The plugin converts to f32 on the way out and back."""
    for source, target in pairs:
        target.state = source.state


class StatefulLM:
    """One stateful LLM, its request(s) and what its state holds.

    ``tokens`` are the ids whose keys/values are in the state, valid while a single
    row ran since the last ``reset``; ``length`` counts positions in any case. With the
    KV mirror the state may also hold rejected guesses, masked out (``reject``).
    """

    def __init__(
        self, core: ov.Core, xml: Path, device: str, props: dict[str, Any], context_length: int,
        mirror: bool = False,
    ) -> None:
        decode_props, prefill_props = split_phases(props)
        model = core.read_model(xml)
        _check_stateful(model, xml)
        slice_last_position(model)
        mirrored = add_kv_outputs(model) if mirror else None
        decode = prefill = core.compile_model(model, device, decode_props)
        if prefill_props is not None:
            prefill = core.compile_model(model, device, prefill_props)
            _check_same_layout(decode, prefill)
        self._compiled = {"prefill": prefill, "decode": decode}
        self._decode = decode.create_infer_request()
        self._prefill = self._decode if prefill is decode else prefill.create_infer_request()
        self.hybrid = self._prefill is not self._decode
        self._to_decode = _state_pairs(self._prefill, self._decode)
        self._reuse_ratio = REUSE_RATIO.get(cpu_kind(), REUSE_RATIO_ELSEWHERE)
        self._mirror = KVMirror(self._decode, mirrored, 1, _mirror_dtype(decode)) if mirrored else None
        #: Whether a rejected guess is cut out of the state rather than masked in it, so
        #: that every step sees the state plain decoding would (``inexact_checks`` decides).
        self.cut_rejections = False
        shape = model.get_variables()[0].get_info().data_shape
        self._dynamic_axes = [i for i, d in enumerate(shape) if d.is_dynamic]
        self._kv_heads = next(d.get_length() for d in shape if d.is_static and d.get_length() > 0)  # [B, H, L, S]
        self._ones = np.ones(context_length, dtype=np.int64)
        self._live = np.ones(context_length, dtype=np.int64)  # one row's mask: 0 = a masked guess
        self._held = self._masked = 0  # positions in the state, of them masked
        self._one_row = np.ones(1, dtype=np.int64)  # LOGITS_ROWS of prompts and token steps
        self._bind_buffers(1)
        self.reset()

    def inexact_checks(self) -> str | None:
        """Why a checking pass here may not compute bit for bit the logits of single token
        steps, or None when it does. Measured (docs/benchmarks.md 6c, 21): the attention
        kernel splits the keys of one head between threads when the KV heads do not divide
        among them (each thread sums its part; a pass of k tokens splits where the last
        token's step would, so earlier rows add in another order); and weight kernels may
        multiply k rows otherwise than one (f32 without activation quantization on some
        CPUs). The first is read off the model; the second is probed: a short pass against
        the same tokens stepped one by one, then the step after its wrong guesses are cut
        out (0.04 s at 135M, 2 s at 1.1B). Where passes are exact, wrong guesses are cut out
        (``cut_rejections``): a step past masked ones sums its attention over more keys, in
        other blocks, and int8 activations round that last-bit difference into whole logits
        at some lengths, which no short probe finds (a 2-KV-head model on AMX: exact at 48
        positions, a row apart at 317, 2026-12-06). Elsewhere masking stays: cheaper,
        and exactness is lost anyway."""
        decode = self._compiled["decode"]
        threads = int(decode.get_property("INFERENCE_NUM_THREADS"))
        heads = self._kv_heads
        if heads % threads:
            return (f"its {heads} KV head{'s' if heads > 1 else ''} do not divide among {threads} threads, so "
                    "the attention kernel sums a head in parts that differ between a pass and a step")
        self.cut_rejections = self._probe_checks()
        if not self.cut_rejections:
            return ("with these properties this CPU's kernels compute several rows otherwise than one plain "
                    "step (a probe differed)")
        return None

    def _probe_checks(self, prompt: int = 48, count: int = 8) -> bool:
        ids = list(range(10, 10 + prompt))
        self.reset()
        logits, fed, steps = self.prefill(ids), [], []
        for _ in range(count):
            fed.append(int(np.argmax(logits)))
            logits = self.decode_step(np.array(fed[-1:]))[0]
            steps.append(logits.copy())
        self.trim(prompt)
        rows = self.check(fed)
        same = all(np.array_equal(row, step) for row, step in zip(rows, steps, strict=True))
        half = count // 2
        self.trim(prompt + half)  # the step after a wrong guess is cut out
        same = same and np.array_equal(self.decode_step(np.array(fed[half : half + 1]))[0], steps[half])
        self.reset()
        return same

    def precisions(self) -> dict[str, str]:
        """The inference precision each phase was compiled with, e.g. ``{"prefill": "bf16", ...}``."""
        return {
            phase: compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
            for phase, compiled in self._compiled.items()
        }

    # -- state bookkeeping -----------------------------------------------------------------
    def reset(self) -> None:
        self._decode.reset_state()
        if self.hybrid:
            self._prefill.reset_state()
        self.tokens: list[int] = []
        self.length = self._held = 0
        self._exact = True
        if self._masked:
            self._live[:] = 1
            self._masked = 0
        if self._mirror is not None:
            self._mirror.length = 0

    def reuse(self, ids: Sequence[int]) -> int:
        """Keep the longest prefix of ``ids`` the state holds (never all of ``ids``: the
        last one must be fed for its logits) and return its length; trim the state back
        to it when that is cheaper than prefilling it again, else start empty."""
        if not self._exact or not self.tokens:
            self.reset()
            return 0
        common = _common_prefix(self.tokens, ids, len(ids) - 1)
        if common < self._reuse_ratio * (len(ids) - common):  # feeding it all afresh is faster
            self.reset()
            return 0
        if common == len(self.tokens):
            return common
        if common * TRIM_COST_RATIO >= len(self.tokens):
            self.trim(common)
            return common
        self.reset()
        return 0

    def trim(self, length: int) -> None:
        """Forget positions ``>= length`` of every key/value along the sequence axis (and
        the masked guesses)."""
        if self._mirror is not None:
            keep = np.flatnonzero(self._live[: self._held])[:length] if self._masked else None
            self._mirror.cut(length, keep)
            if self._masked:
                self._live[: self._held] = 1
                self._masked = 0
        else:
            for state in self._decode.query_state():
                kv = state.state.data
                axis = next(i for i in self._dynamic_axes if kv.shape[i] == self.length)
                kept = kv[(slice(None),) * axis + (slice(0, length),)]
                state.state = ov.Tensor(np.ascontiguousarray(kept))  # set_state ignores ROI strides
        self.tokens = self.tokens[:length]
        self.length = self._held = length

    # -- the steps -------------------------------------------------------------------------
    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        """Feed ``ids`` after the positions already in the state (one row); return the
        logits ``[vocab]`` of the last one."""
        logits: np.ndarray = self._feed(self._prefill_request(len(ids)), ids, 1)[0, -1]
        return logits

    def check(self, ids: Sequence[int]) -> np.ndarray:
        """Feed ``ids`` (a token and the tokens proposed after it) in one pass and return
        the logits ``[len(ids), vocab]`` after each: what ``len(ids)`` token steps would
        give. ``reject`` then forgets the ones not taken."""
        if len(ids) == 1:  # a token step's preallocated inputs
            return self.decode_step(np.asarray(ids))
        logits: np.ndarray = self._feed(self._decode, ids, len(ids))[0]
        return logits

    def reject(self, count: int) -> None:
        """Forget the last ``count`` fed tokens. With the mirror they stay in the state,
        masked out of attention, until ``COMPACT_SHARE`` says to cut them out, or are cut
        out at once (``cut_rejections``)."""
        if not count:
            return
        if self._mirror is None or self.cut_rejections:
            self.trim(self.length - count)
            return
        self._live[self._held - count : self._held] = 0
        self._masked += count
        del self.tokens[-count:]
        self.length -= count
        if self._masked * COMPACT_SHARE > self._held:
            self.trim(self.length)

    def _feed(self, request: Any, ids: Sequence[int], rows: int) -> np.ndarray:
        """One row of ``ids`` after what the state holds; the logits of its last ``rows``."""
        past, count = self.length, len(ids)
        request.set_tensor("input_ids", ov.Tensor(np.array([ids], dtype=np.int64)))
        request.set_tensor("attention_mask", self._mask(1, self._held + count))
        request.set_tensor("position_ids", ov.Tensor(np.arange(past, past + count, dtype=np.int64)[None]))
        request.set_tensor("beam_idx", ov.Tensor(np.zeros(1, dtype=np.int32)))
        request.set_tensor(LOGITS_ROWS, ov.Tensor(np.array([rows], dtype=np.int64)))
        request.infer()
        self._bound_rows = 0
        self.tokens.extend(ids)
        self.length += count
        self._held += count
        if self._mirror is not None:
            self._mirror.append(request, count)
        if request is not self._decode:
            hand_over(self._to_decode)
        return request.get_output_tensor(0).data

    def decode_step(self, tokens: np.ndarray, order: np.ndarray | None = None) -> np.ndarray:
        """Feed one token per row; row ``i`` continues cache row ``order[i]`` (default:
        row ``i``; a one-row state broadcasts to many). Returns logits ``[rows, vocab]``."""
        rows = tokens.shape[0]
        if rows > 1 and self._masked:  # one row's mask cannot serve many
            self.trim(self.length)
        if rows != self._bound_rows:
            self._bind_buffers(rows)
        self._ids[:rows, 0] = tokens
        self._pos[:rows, 0] = self.length
        self._order[:rows] = self._identity[:rows] if order is None else order
        self.length += 1
        self._held += 1
        request = self._decode
        request.set_tensor("attention_mask", self._mask(rows, self._held))
        request.start_async()  # with wait(): no result dict built, unlike infer()
        request.wait()
        if rows == 1:
            self.tokens.append(int(tokens[0]))
            if self._mirror is not None:
                self._mirror.append(request, 1)
        else:
            self._exact = False
        logits: np.ndarray = request.get_output_tensor(0).data[:, -1]
        return logits

    # -- helpers ---------------------------------------------------------------------------
    def _prefill_request(self, count: int) -> Any:
        """The request to prefill ``count`` tokens with (see ``HYBRID_MIN_PROMPT``)."""
        if self.hybrid and self._held == 0 and count >= HYBRID_MIN_PROMPT:
            return self._prefill
        return self._decode

    def _bind_buffers(self, rows: int) -> None:
        """(Re)allocate the decode inputs for ``rows`` rows and share them with OpenVINO."""
        self._ids = np.zeros((rows, 1), dtype=np.int64)
        self._pos = np.zeros((rows, 1), dtype=np.int64)
        self._order = np.zeros(rows, dtype=np.int32)
        self._identity = np.arange(rows, dtype=np.int32)
        request = self._decode
        request.set_tensor("input_ids", ov.Tensor(self._ids, shared_memory=True))
        request.set_tensor("position_ids", ov.Tensor(self._pos, shared_memory=True))
        request.set_tensor("beam_idx", ov.Tensor(self._order, shared_memory=True))
        request.set_tensor(LOGITS_ROWS, ov.Tensor(self._one_row, shared_memory=True))
        self._bound_rows = rows

    def _mask(self, rows: int, length: int) -> ov.Tensor:
        """A ``[rows, length]`` mask viewing a preallocated buffer: one row's own (zeros
        where guesses are masked), or all ones for many rows."""
        if rows == 1:
            if length > self._live.size:
                self._live = np.concatenate([self._live, np.ones(length, dtype=np.int64)])
            return ov.Tensor(self._live[:length].reshape(1, length), shared_memory=True)
        if rows * length > self._ones.size:
            self._ones = np.ones(rows * length * 2, dtype=np.int64)
        return ov.Tensor(self._ones[: rows * length].reshape(rows, length), shared_memory=True)


def _check_same_layout(decode: ov.CompiledModel, prefill: ov.CompiledModel) -> None:
    if kv_layout(decode) != kv_layout(prefill):
        raise EngineError(
            f"the prefill and decode variants store the KV cache differently ({kv_layout(prefill)} vs "
            f"{kv_layout(decode)}); set KV_CACHE_PRECISION the same for both"
        )


def _state_pairs(source: Any, target: Any) -> list[tuple[Any, Any]]:
    """Matching (source, target) states by name; the objects stay valid for the requests'
    lifetime, so the hand-over does not query them again."""
    if source is target:
        return []
    targets = {state.name: state for state in target.query_state()}
    pairs = [(state, targets.get(state.name)) for state in source.query_state()]
    if len(targets) != len(pairs) or any(t is None for _, t in pairs):
        raise EngineError("the prefill and decode variants have different state variables")
    return pairs


def _common_prefix(a: Sequence[int], b: Sequence[int], limit: int) -> int:
    size = min(len(a), len(b), limit)
    if size <= 0:
        return 0
    differ = np.flatnonzero(np.asarray(a[:size]) != np.asarray(b[:size]))
    return int(differ[0]) if differ.size else size
