"""One vinolm engine measured in its own process; prints one JSON line (see ``schema``).

    python -m vinolm.bench.worker --engine genai|native|optimum --model M \\
        --prompt-tokens N --new-tokens M --runs K [--concurrency 1,4,8] [--ov-config K=V] \\
        [--json-schema [FILE]]

Single stream (default): load the engine, warm up, then K greedy generations of exactly
``--new-tokens`` tokens (EOS ignored), each from a new prompt (no prefix cache hit) of
exactly ``--prompt-tokens`` tokens of the engine's own tokenizer, timed from the caller's
side of ``generate`` as a user of the library sees it. With ``--concurrency``: the engine is loaded with batching (genai's
continuous batching), and for each level C simultaneous generations run K rounds; each
round's aggregate generated tokens/s and every request's TTFT are reported. With
``--json-schema`` every generation (warm-up too) carries that JSON-schema constraint
(``default``: ``constrained.DEFAULT_SCHEMA``, which cannot end within the budget) instead of
ignoring EOS, and each timed one is checked to be a start of a document of the schema.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from vinolm.bench.constrained import DEFAULT, SUFFIX, check_prefix, load_schema, short_run
from vinolm.bench.peers.llamacpp import job_arguments, parse_job
from vinolm.bench.schema import (
    Prompts,
    emit,
    error_line,
    level_record,
    new_prompts,
    parse_levels,
    result_line,
    round_record,
    timed_record,
)
from vinolm.errors import InvalidRequest
from vinolm.export import WEIGHT_FORMATS


def load(args: argparse.Namespace, batching: bool, max_concurrency: int) -> tuple[Any, float]:
    """The engine and its load time (the model folder exists already: no export is timed)."""
    from vinolm.engines import load_engine
    from vinolm.engines.base import EngineOptions
    from vinolm.engines.ovconfig import parse_ov_config
    from vinolm.models import prepare

    model = prepare(args.model, args.weight_format, progress=lambda _: None)
    options = EngineOptions(device=args.device, ov_config=parse_ov_config(args.ov_config),
                            batching=batching, max_concurrency=max_concurrency)  # fmt: skip
    started = time.perf_counter()
    engine = load_engine(args.engine, model, options)
    return engine, time.perf_counter() - started


def request(text: str, new_tokens: int, schema: dict[str, Any] | None = None) -> Any:
    """Greedy, exactly ``new_tokens``: EOS ignored, or under ``schema`` masked by its grammar
    (a constraint and ignore_eos do not go together)."""
    from vinolm.types import Constraint, GenerationParams, Request

    constraint = Constraint("json_schema", schema=schema) if schema is not None else None
    params = GenerationParams(max_new_tokens=new_tokens, temperature=0.0, ignore_eos=constraint is None,
                              constraint=constraint)  # fmt: skip
    return Request(prompt=text, params=params)


def timed_generation(engine: Any, text: str, new_tokens: int,
                     schema: dict[str, Any] | None = None) -> tuple[float, float, float, int]:  # fmt: skip
    """(start, first token, end, tokens) of one generation, read from its chunk stream; a
    constrained one is checked against its schema after the clock stops."""
    start = time.perf_counter()
    first = 0.0
    ids: list[int] = []
    for chunk in engine.generate(request(text, new_tokens, schema)):
        if chunk.token_ids and not first:
            first = time.perf_counter()
        ids.extend(chunk.token_ids)
    end = time.perf_counter()
    if len(ids) != new_tokens:
        raise RuntimeError(f"{engine.name} {short_run(len(ids), new_tokens, schema is not None)}")
    if schema is not None:
        check_prefix(Path(engine.model.path), engine.tokenize, schema, ids)
    return start, first, end, len(ids)


def single_stream(engine: Any, prompts: Prompts, args: argparse.Namespace) -> list[dict[str, Any]]:
    for _ in range(args.warmup):
        timed_generation(engine, prompts(), min(args.new_tokens, 8), args.schema)
    runs = []
    for _ in range(args.runs):
        start, first, end, count = timed_generation(engine, prompts(), args.new_tokens, args.schema)
        runs.append(timed_record(args.prompt_tokens, count, start, first, end))
    return runs


def concurrent_round(engine: Any, prompts: Prompts, new_tokens: int, concurrency: int,
                     schema: dict[str, Any] | None) -> dict[str, Any]:  # fmt: skip
    """C generations started together, each drained on its own thread, as server requests are."""
    texts = [prompts() for _ in range(concurrency)]
    with ThreadPoolExecutor(concurrency) as pool:
        began = time.perf_counter()
        futures = [pool.submit(timed_generation, engine, text, new_tokens, schema) for text in texts]
        done = [f.result() for f in futures]
    wall = max(r[2] for r in done) - began
    return round_record(wall, sum(r[3] for r in done), [r[1] - began for r in done])


def throughput(engine: Any, prompts: Prompts, args: argparse.Namespace, levels: list[int]) -> list[dict[str, Any]]:
    concurrent_round(engine, prompts, min(args.new_tokens, 8), max(levels), args.schema)  # warm-up
    return [
        level_record(c, [concurrent_round(engine, prompts, args.new_tokens, c, args.schema) for _ in range(args.runs)])
        for c in levels
    ]


def versions() -> str:
    import openvino as ov
    import openvino_genai

    import vinolm

    return f"vinolm {vinolm.__version__}, openvino {ov.get_version()}, openvino-genai {openvino_genai.__version__}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vinolm.bench.worker", description=__doc__.splitlines()[0])
    p.add_argument("--engine", default="genai", help="genai, native or optimum")
    p.add_argument("--label", default=None, help="name in the JSON line (default: vinolm ENGINE)")
    p.add_argument("--model", default=None, help="any vinolm model reference (default: smollm2-135m)")
    p.add_argument("--weight-format", choices=WEIGHT_FORMATS, default=None)
    p.add_argument("--device", default="CPU")
    p.add_argument("--ov-config", action="append", default=[], metavar="KEY=VALUE")
    job_arguments(p)
    p.add_argument("--concurrency", default="", help="e.g. 1,4,8: measure batched throughput instead")
    p.add_argument("--json-schema", nargs="?", const=DEFAULT, default=None, metavar="FILE",
                   help=f"constrain every generation to this JSON schema ({DEFAULT}: one that cannot end early)")
    args = parse_job(p, argv)
    try:
        args.levels = parse_levels(args.concurrency)
    except ValueError as exc:
        p.error(f"--concurrency: {exc}")
    try:
        args.schema = load_schema(args.json_schema) if args.json_schema else None
    except InvalidRequest as exc:
        p.error(str(exc))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    label = args.label or f"vinolm {args.engine}" + (SUFFIX if args.schema is not None else "")
    try:
        engine, load_s = load(args, batching=bool(args.levels), max_concurrency=max(args.levels or [1]))
        prompts = new_prompts(engine.tokenize, engine.detokenize, args.prompt_tokens)
        compiled = {k: v for k, v in engine.properties.items() if k != "CACHE_DIR"}  # what the row ran with
        extra: dict[str, Any] = {"engine": args.engine, "ov_config": args.ov_config, "properties": compiled,
                                 "model": str(engine.model.path), "prompt_tokens": args.prompt_tokens,
                                 "json_schema": args.json_schema}  # fmt: skip
        if args.levels:
            line = result_line(label, versions(), load_s, [], levels=throughput(engine, prompts, args, args.levels),
                               mode="in-process batching", **extra)  # fmt: skip
        else:
            line = result_line(label, versions(), load_s, single_stream(engine, prompts, args), **extra)
        engine.close()
    except Exception as exc:  # noqa: BLE001 - one line whatever happens, the runner goes on
        emit(error_line(label, f"{type(exc).__name__}: {exc}"))
        return 1
    emit(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
