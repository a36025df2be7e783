"""Many requests at once into the batching engine: how soon does the last one start?

    python -m vinolm.bench.burst [--model M] [--weight-format int4] [--requests 8] \\
        [--prompt-tokens 16] [--new-tokens 24] [--bursts 8] [--json]

openvino-genai's ``step()`` binding holds the GIL for a whole step, so requests that are
still being tokenized and queued wait for the scheduler thread to let go of it. Bursts
alternate, in one process, between the scheduler yielding the GIL once per step (vinolm's
way) and not yielding, so both see the same machine. Per burst: the time from the burst's
start to the last request's first token, and to the last request's end; the table gives
the medians over the bursts of each mode (the first burst of each is a warm-up).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import threading
import time
from typing import Any

from vinolm.bench.report import run_tool
from vinolm.bench.schema import check_context, prompt_text
from vinolm.bench.worker import timed_generation
from vinolm.export import WEIGHT_FORMATS

MODES = {"yield": True, "no-yield": False}


def burst(engine: Any, prompts: list[str], new_tokens: int) -> tuple[float, float]:
    """(last first token, last end) in seconds from the moment every request was let go."""
    gate = threading.Barrier(len(prompts) + 1)
    spans: list[tuple[float, float]] = []

    def one(text: str) -> None:
        gate.wait()
        _, first, end, _ = timed_generation(engine, text, new_tokens)
        spans.append((first, end))

    threads = [threading.Thread(target=one, args=(text,)) for text in prompts]
    for thread in threads:
        thread.start()
    gate.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return max(f for f, _ in spans) - started, max(e for _, e in spans) - started


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from vinolm.engines import load_engine
    from vinolm.engines.base import EngineOptions
    from vinolm.engines.batching import BatchScheduler
    from vinolm.models import prepare

    model = prepare(args.model, args.weight_format, progress=lambda _: None)
    check_context(model, args.prompt_tokens + args.new_tokens, "--prompt-tokens and --new-tokens")
    engine = load_engine("genai", model, EngineOptions(batching=True, max_concurrency=args.requests))
    variants = itertools.count()

    def prompts() -> list[str]:
        return [prompt_text(engine.tokenize, engine.detokenize, args.prompt_tokens, next(variants))
                for _ in range(args.requests)]

    runs: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
    try:
        for _ in range(args.bursts + 1):
            for mode, flag in MODES.items():
                BatchScheduler.yield_gil = flag
                runs[mode].append(burst(engine, prompts(), args.new_tokens))
    finally:
        BatchScheduler.yield_gil = True
        engine.close()
    table = {mode: {"last_first_token_s": round(statistics.median(f for f, _ in timed[1:]), 3),
                    "last_end_s": round(statistics.median(e for _, e in timed[1:]), 3),
                    "bursts": timed[1:]}
             for mode, timed in runs.items()}  # fmt: skip
    return {"model": str(model.path), "requests": args.requests, "prompt_tokens": args.prompt_tokens,
            "new_tokens": args.new_tokens, "bursts": args.bursts, "modes": table}  # fmt: skip


def markdown(result: dict[str, Any]) -> str:
    head = f"| scheduler ({result['requests']} requests at once, medians of {result['bursts']} bursts) "
    lines = [head + "| last first token s | last end s |", "|---|---:|---:|"]
    for mode, r in result["modes"].items():
        lines.append(f"| {mode} | {r['last_first_token_s']:.3f} | {r['last_end_s']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vinolm.bench.burst", description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--weight-format", choices=WEIGHT_FORMATS, default="int4")
    p.add_argument("--requests", type=int, default=8)
    p.add_argument("--prompt-tokens", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=24)
    p.add_argument("--bursts", type=int, default=8)
    return run_tool(p, argv, _problem, measure, markdown)


def _problem(args: argparse.Namespace) -> str | None:
    if min(args.requests, args.prompt_tokens, args.new_tokens, args.bursts) < 1:
        return "--requests, --prompt-tokens, --new-tokens and --bursts must be >= 1"
    return None


if __name__ == "__main__":
    raise SystemExit(main())
