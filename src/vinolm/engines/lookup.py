"""Prompt lookup: propose the tokens that followed the last occurrence of the sequence's
own ending n-gram earlier in it (the prompt or the answer so far). Free to compute, and
right wherever an answer quotes its input: summaries, extraction, rewrites, code edits."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def propose(history: Sequence[int], count: int, max_ngram: int) -> list[int]:
    """Up to ``count`` tokens that followed the longest (at most ``max_ngram``) suffix of
    ``history`` at its latest earlier occurrence; none when no suffix recurs."""
    ids = np.asarray(history)
    size = len(ids)
    for n in range(min(max_ngram, size - 1), 0, -1):
        tail = ids[size - n :]
        windows = np.lib.stride_tricks.sliding_window_view(ids[: size - 1], n)
        hits = np.flatnonzero((windows == tail).all(axis=1))
        if hits.size:
            start = int(hits[-1]) + n
            return ids[start : start + count].tolist()
    return []
