"""The one JSON line every benchmark process prints, and the statistics over it.

vinolm's worker and every peer (openvino-genai direct, optimum-intel, PyTorch,
llama.cpp) print the same shape, so the runner and the report never care who measured::

    {"peer", "version", "load_s", "runs": [{"ttft_s", "prefill_tps", "decode_tps",
     "tpot_s", "new_tokens", "total_s"}], "peak_rss_mb", ...}
    {"peer", "skipped": reason}          when the runtime is not installed
    {"peer", "error": message}           when it failed

Throughput processes (in-process batching, servers) add ``levels``: per concurrency the
aggregate generated tokens/s of each round and the TTFT of every request.

Definitions (the llama.cpp peer's, which this module reuses): TTFT from the start of the
call to the first generated token; TPOT = (end - first token) / (new tokens - 1);
decode tokens/s = 1 / TPOT; prefill tokens/s = prompt tokens / TTFT. Only the standard
library is imported: peers run in other interpreters.
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import sys
from collections.abc import Callable, Sequence
from typing import Any

from vinolm.bench.peers.llamacpp import FILLER, lead, loadavg, peak_rss_mb
from vinolm.errors import InvalidRequest

RUN_KEYS = ("ttft_s", "tpot_s", "decode_tps", "prefill_tps", "total_s")
Tokenize = Callable[[str], list[int]]
Detokenize = Callable[[list[int]], str]
Prompts = Callable[[], str]


def run_record(prompt_tokens: int, new_tokens: int, ttft_s: float, tpot_s: float | None) -> dict[str, Any]:
    """One timed generation in the shared shape (``tpot_s`` is None for a single token)."""
    total = ttft_s + (tpot_s or 0.0) * max(new_tokens - 1, 0)
    return {
        "ttft_s": round(ttft_s, 6),
        "prefill_tps": round(prompt_tokens / ttft_s, 2) if ttft_s > 0 else None,
        "decode_tps": round(1.0 / tpot_s, 2) if tpot_s else None,
        "tpot_s": round(tpot_s, 6) if tpot_s else None,
        "new_tokens": new_tokens,
        "total_s": round(total, 6),
    }


def timed_record(
    prompt_tokens: int, new_tokens: int, start: float, first: float, end: float
) -> dict[str, Any]:
    """``run_record`` from three wall-clock instants (call, first token, last token)."""
    tpot = (end - first) / (new_tokens - 1) if new_tokens > 1 else None
    return run_record(prompt_tokens, new_tokens, first - start, tpot)


def spread(values: Sequence[float | None]) -> dict[str, float] | None:
    """Median, min and max of the known values: medians resist a busy machine's outliers."""
    known = [v for v in values if v is not None]
    if not known:
        return None
    return {
        "median": round(statistics.median(known), 6),
        "min": round(min(known), 6),
        "max": round(max(known), 6),
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, float] | None]:
    return {key: spread([r.get(key) for r in runs]) for key in RUN_KEYS}


def result_line(
    peer: str, version: str, load_s: float, runs: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    """The finished line: identity, load time, the runs and their spread, memory, load."""
    return {
        "peer": peer,
        "version": version,
        "load_s": round(load_s, 4),
        "runs": runs,
        "stats": summarize(runs),
        "peak_rss_mb": peak_rss_mb(),
        "cpu_count": os.cpu_count(),
        "loadavg_after": loadavg(),
        **extra,
    }


def skip_line(peer: str, reason: str) -> dict[str, Any]:
    return {"peer": peer, "skipped": reason}


def error_line(peer: str, message: str) -> dict[str, Any]:
    return {"peer": peer, "error": message[-2000:]}


def emit(line: dict[str, Any]) -> None:
    """Print the line as the process's only stdout output."""
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def round_record(wall_s: float, tokens: int, ttfts: list[float]) -> dict[str, Any]:
    """One round of C simultaneous requests: aggregate tokens/s over the round's wall time."""
    return {
        "wall_s": round(wall_s, 6),
        "generated_tokens": tokens,
        "aggregate_tps": round(tokens / wall_s, 2) if wall_s > 0 else None,
        "ttft_s": [round(t, 6) for t in ttfts],
    }


def level_record(concurrency: int, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """A concurrency level in the shape of the llama.cpp server peer's ``levels``."""
    tps = [r["aggregate_tps"] for r in rounds]
    ttfts = [t for r in rounds for t in r["ttft_s"] if t is not None]
    ttft = spread(ttfts) or {}
    return {
        "concurrency": concurrency,
        "aggregate_tps_median": (spread(tps) or {}).get("median"),
        "aggregate_tps_rounds": tps,
        "ttft_s_median": ttft.get("median"),
        "ttft_s_min": ttft.get("min"),
        "ttft_s_max": ttft.get("max"),
        "rounds": rounds,
    }


def prompt_ids(tokenize: Tokenize, n: int, variant: int = 0) -> list[int]:
    """The first ``n`` tokens of prompt number ``variant`` (the llama.cpp peer's prompts:
    its own lead words, then the shared filler text). Each timed run takes a new
    variant, so no engine's prefix cache can serve it."""
    if n < 1:
        raise ValueError("a prompt needs at least one token")
    reps = 1
    while len(ids := tokenize(lead(variant) + FILLER * reps)) < n:
        reps *= 2
    return ids[:n]


def prompt_text(tokenize: Tokenize, detokenize: Detokenize, n: int, variant: int = 0) -> str:
    """A text that ``tokenize`` turns into exactly ``n`` tokens, for engines that take text.

    Cutting the filler's ids and decoding them nearly always round-trips; when the cut
    falls inside a multi-token word its last pieces merge into one token, so nearby cuts,
    then the ids with one of the last tokens left out, are tried (the filler's words are
    arbitrary; only the lead words and the length matter).
    """
    ids = prompt_ids(tokenize, n + 16, variant)
    cuts = [ids[:cut] for cut in sorted(range(max(1, n - 8), n + 9), key=lambda c: abs(c - n))]
    drops = [ids[:drop] + ids[drop + 1:n + 1] for drop in range(n - 1, max(0, n - 17), -1)]
    for candidate in cuts + drops:
        text = detokenize(candidate)
        if len(tokenize(text)) == n:
            return text
    raise ValueError(f"no cut of the filler text tokenizes to exactly {n} tokens")


def check_context(model: Any, tokens: int, what: str) -> None:
    """Refuse a run whose prompt and answer outgrow ``model``'s context before anything loads:
    past it every request is refused (a table of errors), and cutting a filler text of that many
    tokens alone takes minutes."""
    if tokens > model.context_length:
        raise InvalidRequest(f"{what} make {tokens} tokens, more than {model.name}'s context of "
                             f"{model.context_length}")


def new_prompts(tokenize: Tokenize, detokenize: Detokenize, n: int) -> Prompts:
    """A source of ``n``-token prompt texts, each call a variant never returned before."""
    variants = itertools.count()
    return lambda: prompt_text(tokenize, detokenize, n, next(variants))


def parse_levels(text: str) -> list[int]:
    """``"1,4,8"`` -> ``[1, 4, 8]``; empty or ``none`` -> no levels."""
    if text.strip().lower() in ("", "none", "0"):
        return []
    levels = [int(x) for x in text.split(",") if x.strip()]
    if min(levels) < 1:
        raise ValueError("concurrency levels must be >= 1")
    return levels
