"""Decoding math for the native engine: penalties, filters, sampling and beam search.

Everything here runs once per generated token over a ~50k vocabulary, so each step is
a small named numpy function that can be timed on its own (gpt-fast style), full-vocab
sorts are avoided (``argpartition`` finds the few candidates that matter) and no Python
loop touches the vocabulary. Filters return the *indices they keep*: the sampler then
narrows to those candidates, so later steps touch k values instead of the vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

from vinolm.types import GenerationParams

_NEG = np.float32(-1.0e9)  # HF's "impossible" score; finite so sums stay ordered
_DRAW_BLOCK = 256  # inverse-CDF block size: cumsum is slow in numpy, block sums are not


# -- per-sequence history ------------------------------------------------------------


class TokenCounts(NamedTuple):
    """Sparse counts: token ``ids[i]`` (unique) occurred ``counts[i]`` >= 1 times."""

    ids: np.ndarray
    counts: np.ndarray


class _IntBuffer:
    """A growable int64 array, so appending a token is O(1) amortized, not a copy."""

    def __init__(self, values: Sequence[int] = ()) -> None:
        self._data = np.zeros(max(64, 2 * len(values)), dtype=np.int64)
        self._data[: len(values)] = values
        self._size = len(values)

    def append(self, value: int) -> None:
        if self._size == self._data.size:
            self._data = np.concatenate([self._data, np.zeros_like(self._data)])
        self._data[self._size] = value
        self._size += 1

    def add_at(self, index: int, value: int) -> None:
        self._data[index] += value

    def view(self) -> np.ndarray:
        return self._data[: self._size]


class TokenHistory:
    """What the penalties need to know about one sequence, updated per token in O(1).

    Repetition penalty looks at prompt + generated ids; presence and frequency
    penalties only at generated ones (OpenAI semantics), with their counts.
    """

    def __init__(self, prompt_ids: Iterable[int] = ()) -> None:
        unique = list(dict.fromkeys(int(t) for t in prompt_ids))
        self._seen_set = set(unique)
        self._seen = _IntBuffer(unique)
        self._slot: dict[int, int] = {}
        self._gen_ids = _IntBuffer()
        self._gen_counts = _IntBuffer()
        self.generated: list[int] = []

    def append(self, token_id: int) -> None:
        if token_id not in self._seen_set:
            self._seen_set.add(token_id)
            self._seen.append(token_id)
        slot = self._slot.get(token_id)
        if slot is None:
            slot = self._slot[token_id] = len(self._slot)
            self._gen_ids.append(token_id)
            self._gen_counts.append(0)
        self._gen_counts.add_at(slot, 1)
        self.generated.append(token_id)

    @property
    def seen_ids(self) -> np.ndarray:
        """Unique ids of prompt and generated tokens (a view: do not keep it)."""
        return self._seen.view()

    @property
    def generated_counts(self) -> TokenCounts:
        return TokenCounts(self._gen_ids.view(), self._gen_counts.view())


# -- logits processors -----------------------------------------------------------------


def apply_repetition_penalty(
    logits: np.ndarray, token_ids: np.ndarray, penalty: float
) -> np.ndarray:
    """HF transformers' CTRL-style penalty, in place: dividing a negative logit would
    *raise* it, so negatives are multiplied instead. ``token_ids`` must be unique."""
    if penalty == 1.0 or token_ids.size == 0:
        return logits
    picked = logits[token_ids]
    logits[token_ids] = np.where(picked < 0, picked * penalty, picked / penalty)
    return logits


def apply_presence_frequency(
    logits: np.ndarray, generated_counts: TokenCounts, presence: float, frequency: float
) -> np.ndarray:
    """OpenAI's additive penalties, in place: the sparse counts keep the cost
    proportional to distinct generated tokens, not to the vocabulary."""
    ids, counts = generated_counts
    if (presence == 0.0 and frequency == 0.0) or ids.size == 0:
        return logits
    logits[ids] -= counts * frequency + presence
    return logits


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Scaled copy; temperature must be > 0 (0 means greedy and never gets here)."""
    if temperature == 1.0:
        return logits
    return logits / np.float32(temperature)


def top_k(logits: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest logits (unordered; ties at the edge broken arbitrarily)."""
    if k <= 0 or k >= logits.size:
        return np.arange(logits.size)
    return np.argpartition(logits, logits.size - k)[logits.size - k :]


def top_p(logits: np.ndarray, p: float) -> np.ndarray:
    """Indices of the nucleus, most likely first: the fewest tokens whose probability
    sums to >= p (at least one). Renormalizes over ``logits``, so after top-k it is HF's."""
    if p >= 1.0:
        return np.arange(logits.size)
    weights = np.exp(logits - logits.max())
    target = p * float(weights.sum(dtype=np.float64))
    order = _heaviest_first(logits, weights, target)
    cumulative = np.cumsum(weights[order], dtype=np.float64)
    return order[: min(int(np.searchsorted(cumulative, target)) + 1, order.size)]


def _heaviest_first(logits: np.ndarray, weights: np.ndarray, target: float) -> np.ndarray:
    """Tokens by falling probability, enough of them to carry ``target`` mass.

    LLM distributions are peaked: the tokens within a few nats of the best usually
    carry the mass, so only they get sorted; flat ones fall back to a full sort.
    """
    if logits.size <= _DRAW_BLOCK:  # already narrowed (top-k): sorting is cheapest
        return np.argsort(-logits)
    best = logits.max()
    for margin in (4.0, 8.0, 16.0):
        near = np.flatnonzero(logits >= best - margin)
        if weights[near].sum(dtype=np.float64) >= target:
            return near[np.argsort(-logits[near])]
    return np.argsort(-logits)


def min_p(logits: np.ndarray, p: float) -> np.ndarray:
    """Indices with prob >= p * max prob, compared in logit space (no exp needed)."""
    if p <= 0.0:
        return np.arange(logits.size)
    return np.flatnonzero(logits >= logits.max() + np.float32(np.log(p)))


# -- distributions ---------------------------------------------------------------------


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-probabilities in float32, the input :class:`BeamSearch` expects."""
    logits = np.asarray(logits, dtype=np.float32)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def top_logprobs(logits: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The ``k`` most likely tokens under the raw logits, most likely first, with their logprobs."""
    logprobs = log_softmax(np.asarray(logits, dtype=np.float32).reshape(-1))
    return [(int(i), float(logprobs[i])) for i in _top_desc(logprobs, k)]


def logsumexp(logits: np.ndarray) -> float:
    top = float(logits.max())
    return top + float(np.log(np.exp(logits - top).sum(dtype=np.float64)))


def draw_index(weights: np.ndarray, u: float) -> int:
    """Inverse-CDF draw for ``u`` in [0, 1) from unnormalized non-negative weights.

    A vocabulary-long ``cumsum`` costs ~250 us; finding the block first and then
    scanning only that block gives the same index for a fraction of that.
    """
    start, rest = _locate_block(weights, u)
    inner_cdf = np.cumsum(weights[start : start + _DRAW_BLOCK], dtype=np.float64)
    index = start + min(int(np.searchsorted(inner_cdf, rest, side="right")), inner_cdf.size - 1)
    while weights[index] == 0.0:  # rounding between the two sums; the block has mass
        index -= 1
    return index


def _locate_block(weights: np.ndarray, u: float) -> tuple[int, float]:
    """The block holding quantile ``u`` and the mass still to walk inside it."""
    if weights.size <= _DRAW_BLOCK:
        return 0, u * float(weights.sum(dtype=np.float64))
    starts = np.arange(0, weights.size, _DRAW_BLOCK)
    block_cdf = np.cumsum(np.add.reduceat(weights, starts), dtype=np.float64)
    target = u * block_cdf[-1]
    block = min(int(np.searchsorted(block_cdf, target, side="right")), starts.size - 1)
    return int(starts[block]), target - (block_cdf[block - 1] if block else 0.0)


def stop_token_ids(params: GenerationParams, eos_token_ids: Iterable[int]) -> frozenset[int]:
    """Tokens that end a sequence: explicit stop ids, plus EOS unless ``ignore_eos``."""
    eos = () if params.ignore_eos else tuple(eos_token_ids)
    return frozenset(int(t) for t in (*params.stop_token_ids, *eos))


# -- the sampler -------------------------------------------------------------------------


class Sampler:
    """Picks the next token from one row of logits under a request's settings.

    Order follows HF transformers: repetition penalty, (OpenAI) presence/frequency,
    temperature, top-k, top-p, min-p. ``temperature == 0`` is greedy, with the
    penalties still applied as HF does. One seeded generator serves all sequences of
    a request, so a seed reproduces the whole output.
    """

    def __init__(self, params: GenerationParams, eos_token_ids: Iterable[int] = ()) -> None:
        self.params = params
        self.stop_ids = stop_token_ids(params, eos_token_ids)
        self.rng = np.random.default_rng(params.seed)
        self._filters = [
            (select, value)
            for select, value, active in (
                (top_k, params.top_k, params.top_k > 0),
                (top_p, params.top_p, params.top_p < 1.0),
                (min_p, params.min_p, params.min_p > 0.0),
            )
            if active
        ]
        self._penalized = (
            params.repetition_penalty != 1.0
            or params.presence_penalty != 0.0
            or params.frequency_penalty != 0.0
        )

    def is_stop(self, token_id: int) -> bool:
        return token_id in self.stop_ids

    def next_token(
        self, logits: np.ndarray, context: TokenHistory, allowed: np.ndarray | None = None
    ) -> tuple[int, float]:
        """Choose a token among the ``allowed`` ones (a constraint's mask; None = all),
        record it in ``context``; return it with its logprob under the model's own
        distribution (log-softmax of the raw logits, before penalties, mask and filters:
        what OpenAI and openvino-genai report)."""
        raw = np.asarray(logits, dtype=np.float32).reshape(-1)
        scores = self.penalize(raw, context)
        if allowed is not None:
            scores = np.where(allowed, scores, np.float32(-np.inf))
        token = self.sample(scores) if self.params.do_sample else int(np.argmax(scores))
        context.append(token)
        return token, float(raw[token]) - logsumexp(raw)

    def penalize(self, logits: np.ndarray, context: TokenHistory) -> np.ndarray:
        """Penalized copy of ``logits`` (or ``logits`` itself when nothing applies)."""
        if not self._penalized:
            return logits
        p = self.params
        scores = logits.copy()
        apply_repetition_penalty(scores, context.seen_ids, p.repetition_penalty)
        apply_presence_frequency(
            scores, context.generated_counts, p.presence_penalty, p.frequency_penalty
        )
        return scores

    def sample(self, logits: np.ndarray) -> int:
        """Temperature, then the filters on ever fewer candidates, then one draw
        (tokens at -inf, outside a constraint, are never drawn)."""
        scores = apply_temperature(logits, self.params.temperature)
        ids: np.ndarray | None = None
        for select, value in self._filters:
            keep = select(scores, value)
            scores = scores[keep]
            ids = keep if ids is None else ids[keep]
        weights = np.exp(scores - scores.max())
        choice = draw_index(weights, float(self.rng.random()))
        return choice if ids is None else int(ids[choice])


# -- beam search -------------------------------------------------------------------------


def _top_desc(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest values, largest first (``torch.topk``)."""
    if k < values.size:
        part = np.argpartition(values, values.size - k)[values.size - k :]
    else:
        part = np.arange(values.size)
    return part[np.argsort(-values[part])]


class BeamSearch:
    """Beam search with the semantics of HF transformers' ``_beam_search`` (>= 4.50,
    ``do_sample=False``, ``early_stopping=False``), driven one step at a time so the
    engine owns the model: it runs ``num_beams`` rows, calls :meth:`step` with their
    log-probabilities and feeds back the returned tokens, reordering its KV cache
    with the returned beam indices (OpenVINO's ``beam_idx`` input).

    Scores stay float32 and the -1e9 sentinels match HF's, so the same per-step
    log-probabilities give the same token ids as ``generate(num_beams=N)``.
    """

    def __init__(
        self,
        num_beams: int,
        max_new_tokens: int,
        eos_token_ids: Iterable[int] = (),
        length_penalty: float = 1.0,
        num_return_sequences: int = 1,
    ) -> None:
        self.num_beams = num_beams
        self.max_new_tokens = max_new_tokens
        self.length_penalty = length_penalty
        self.num_return_sequences = num_return_sequences
        self._eos = np.array(sorted(set(eos_token_ids)), dtype=np.int64)
        # HF keeps (1 + #eos) * beams candidates so that enough of them do not end.
        self._candidates = max(2, 1 + self._eos.size) * num_beams
        # All beams start identical; only beam 0 may propose the first tokens.
        self._running_scores = np.full(num_beams, _NEG, dtype=np.float32)
        self._running_scores[0] = 0.0
        self._running = np.zeros((num_beams, max_new_tokens), dtype=np.int64)
        self._finished = np.zeros((num_beams, max_new_tokens), dtype=np.int64)
        self._finished_scores = np.full(num_beams, _NEG, dtype=np.float32)
        self._finished_lengths = np.zeros(num_beams, dtype=np.int64)
        self._is_finished = np.zeros(num_beams, dtype=bool)
        self._length = 0
        self._done = False

    @classmethod
    def from_params(
        cls, params: GenerationParams, eos_token_ids: Iterable[int] = ()
    ) -> BeamSearch:
        return cls(
            num_beams=params.num_beams,
            max_new_tokens=params.max_new_tokens,
            eos_token_ids=stop_token_ids(params, eos_token_ids),
            length_penalty=params.length_penalty,
            num_return_sequences=params.num_return_sequences,
        )

    @property
    def done(self) -> bool:
        return self._done

    def step(self, logprobs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Advance all beams by one token.

        ``logprobs`` is ``[num_beams, vocab]`` for the current rows. Returns the next
        token of each row and, per row, the old row it continues (``beam_idx``).
        """
        if self._done:
            raise RuntimeError("beam search is done; call finalize()")
        vocab = logprobs.shape[-1]
        totals = np.asarray(logprobs, dtype=np.float32) + self._running_scores[:, None]
        flat = totals.reshape(-1)
        top = _top_desc(flat, self._candidates)
        scores, beams, tokens = flat[top], top // vocab, top % vocab
        sequences = self._running[beams]
        sequences[:, self._length] = tokens
        self._length += 1
        ends = np.isin(tokens, self._eos) | (self._length >= self.max_new_tokens)
        # Ended candidates cannot run on: push them below every live one.
        live_scores = scores + ends * _NEG
        keep = _top_desc(live_scores, self.num_beams)
        self._running = sequences[keep]
        self._running_scores = live_scores[keep]
        self._admit_finished(sequences, scores, ends)
        self._done = bool(ends.all()) or not self._can_improve()
        return tokens[keep], beams[keep]

    def _admit_finished(self, sequences: np.ndarray, scores: np.ndarray, ends: np.ndarray) -> None:
        """Merge the ended candidates ranked within the top ``num_beams`` into the
        finished set (HF: only those; the rest exist to keep enough beams alive)."""
        admitted = ends.copy()
        admitted[self.num_beams :] = False
        normalized = scores / (self._length**self.length_penalty) + ~admitted * _NEG
        merged_scores = np.concatenate([self._finished_scores, normalized])
        best = _top_desc(merged_scores, self.num_beams)
        lengths = np.full(sequences.shape[0], self._length, dtype=np.int64)
        self._finished = np.concatenate([self._finished, sequences])[best]
        self._finished_scores = merged_scores[best]
        self._finished_lengths = np.concatenate([self._finished_lengths, lengths])[best]
        self._is_finished = np.concatenate([self._is_finished, admitted])[best]

    def _can_improve(self) -> bool:
        """HF's early-stop heuristic for ``early_stopping=False``: could the best live
        beam, scored at the current length, beat the worst finished hypothesis? Empty
        finished slots score -1e9, so the answer is yes until ``num_beams`` finished."""
        best_live = self._running_scores[0] / (self._length**self.length_penalty)
        return bool(best_live > self._finished_scores.min())

    def finalize(self) -> list[tuple[list[int], float]]:
        """The best ``num_return_sequences`` hypotheses, best first, as (generated ids
        including a final EOS, length-normalized score). Before ``done`` (a cancelled
        request) the live beams count as finished, as HF's old scorer did."""
        if not self._done and self._length:
            ends = np.ones(self.num_beams, dtype=bool)
            self._admit_finished(self._running, self._running_scores, ends)
            self._done = True
        return [
            (self._finished[i, : self._finished_lengths[i]].tolist(), float(self._finished_scores[i]))
            for i in range(self.num_beams)
            if self._is_finished[i]
        ][: self.num_return_sequences]
