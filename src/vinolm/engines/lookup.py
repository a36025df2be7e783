"""Prompt lookup: propose the tokens that followed an earlier occurrence of the sequence's
own ending n-gram (in the prompt or the answer so far). Cheap to compute (0.1 ms over 900
tokens), and right wherever an answer quotes its input: summaries, extraction, rewrites."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vinolm.cpu import INT8_DOT_FLAGS, cpu_flags
from vinolm.engines.base import PROPOSED_TOKENS, Speculation
from vinolm.engines.ovconfig import device_base

#: Tokens prompt lookup proposes per step on a CPU without int8 dot products (VNNI), unless
#: the request or the server says: genai checks that many every step, hit or miss; the native
#: engine at most that many (``next_count``). There a checking pass computes in f32 (no int8
#: activations), about 1.6-3 ms more per proposed token against a 12 ms step (135M), so fewer
#: win. A real Zen 3 (AVX2 only), copying a 650-token text, one process, 7 runs: genai 3
#: tokens 1.60x plain decoding, 5 1.21x, 10 1.06x; free generation 0.78x, 0.54x, 0.39x; native
#: up to 3 1.35x, 5 1.31x, 10 1.25x, free generation 1.02x each; over all 18 texts (n-grams up
#: to 6) native up to 3 1.51x, 5 1.37x (docs/benchmarks.md, section 16; genai's earlier runs
#: alike). With int8 activations a pass is nearly as cheap as a step and ``PROPOSED_TOKENS``
#: stay (Zen 5, section 6b): that holds for AVX-VNNI CPUs too (Intel Alder Lake and later,
#: vinolm's kind ``avx2-vnni``), whose FullyConnected kernels OpenVINO also quantizes on the
#: fly: rehearsed on a Xeon capped at AVX2_VNNI, 18 texts, genai 5 tokens 1.58x, 3 1.48x
#: (section 19).
F32_LOOKUP_PROPOSALS = 3
#: The same for a draft model, whose every proposal also costs a draft step. SmolLM2-135M
#: drafting for its own weights widened to 1.1B parameters (``bench.shapes``' wide shape) on a
#: real Zen 3, free generation, one process, 5 runs: proposing 1 / 2 / 3 / 5 gained 1.29x /
#: 1.45x / 1.40x / 1.26x where the draft agrees with the target 99% of the time, and 1.06x /
#: 1.05x / 0.98x / 0.64x where it agrees ~71% (docs/benchmarks.md, section 17). With int8
#: activations ``PROPOSED_TOKENS`` stay: on an AMX Xeon the same pair at 71% agreement gained
#: 1.33x / 1.45x / 1.65x / 1.63x proposing 1 / 2 / 3 / 5 (8: 1.59x), and 2.46x proposing 5
#: where the draft agrees 93.5% (section 20).
F32_DRAFT_PROPOSALS = 2


def f32_checks(device: str, flags: set[str] | None = None) -> bool:
    """Whether proposals checked on ``device`` are computed in f32 - a CPU without int8 dot
    products - where each one costs nearly a row of weight math (``flags`` None: the host's,
    as OpenVINO sees them)."""
    return device_base(device) == "CPU" and not INT8_DOT_FLAGS & (cpu_flags() if flags is None else flags)


def proposed_tokens(spec: Speculation, device: str, flags: set[str] | None = None) -> int:
    """What an engine proposes per step unless a request says: the server's setting, else
    what this CPU's arithmetic favours."""
    if spec.num_assistant_tokens:
        return spec.num_assistant_tokens
    if f32_checks(device, flags):
        return F32_LOOKUP_PROPOSALS if spec.draft is None else F32_DRAFT_PROPOSALS
    return PROPOSED_TOKENS


def propose(history: Sequence[int], count: int, max_ngram: int, min_ngram: int = 1) -> list[int]:
    """Up to ``count`` tokens that followed the longest (``min_ngram`` to ``max_ngram``)
    suffix of ``history`` earlier in it; none when no suffix recurs. Of its occurrences,
    the latest with ``count`` tokens after it, else the earliest: in a loop the latest
    one is a period back and could propose only a period's worth of tokens."""
    ids = np.asarray(history)
    size = len(ids)
    for n in range(min(max_ngram, size - 1), min_ngram - 1, -1):
        tail = ids[size - n :]
        windows = np.lib.stride_tricks.sliding_window_view(ids[: size - 1], n)
        starts = np.flatnonzero((windows == tail).all(axis=1)) + n
        if starts.size:
            full = starts[size - starts >= count]
            start = int(full[-1] if full.size else starts[0])
            return ids[start : start + count].tolist()
    return []


def next_count(count: int, limit: int, proposed: int, accepted: int) -> int:
    """How many tokens to propose next: two more after a pass that took them all (up to
    ``limit``), one fewer after a miss - transformers' "heuristic" schedule. A pass over 10
    proposals costs 1.8-3.4 token steps (135M, 700-900 positions) and a miss ~1.5 more, so
    the count must follow how well the proposals do. On the copy task (5 runs, 2-gram
    matches, starting at 10) this gave 1.49x plain decoding, a fixed count 1.44x, and
    cutting back to one more than was taken 1.32x."""
    if proposed == 0:
        return count
    if accepted == proposed:
        return min(limit, count + 2)
    return max(1, count - 1)
