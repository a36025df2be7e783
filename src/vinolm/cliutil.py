"""Arguments shared by several commands, and their translation into library objects.

Kept free of heavy imports: building the parser (``vinolm --help``) must not load
OpenVINO, torch or transformers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vinolm.errors import InvalidRequest
from vinolm.export import WEIGHT_FORMATS
from vinolm.types import SPECULATION_LIMIT

if TYPE_CHECKING:
    from vinolm.chat.session import Response
    from vinolm.engines.base import Engine, Speculation
    from vinolm.types import Constraint, GenerationParams, Metrics


def add_model_args(parser: argparse.ArgumentParser, engine: bool = True, several: bool = False) -> None:
    group = parser.add_argument_group("model")
    if several:
        group.add_argument("--model", "-m", action="append", default=None, metavar="[NAME=]MODEL",
                           help="catalog name, OpenVINO folder, HF folder, .gguf file or hub id, repeatable; "
                                "NAME= sets the name clients use (default: smollm2-135m)")
    else:
        group.add_argument("--model", "-m", default=None,
                           help="catalog name, OpenVINO folder, HF folder, .gguf file or hub id (default: smollm2-135m)")
    group.add_argument("--weight-format", choices=WEIGHT_FORMATS, default=None,
                       help="weights to prepare when the model must be exported first")
    group.add_argument("--device", default="CPU", help="OpenVINO device (see 'vinolm devices')")
    group.add_argument("--ov-config", action="append", metavar="KEY=VALUE", default=[],
                       help="OpenVINO property, repeatable (e.g. INFERENCE_PRECISION_HINT=f32)")
    if engine:
        group.add_argument("--engine", "-e", default="genai", help="genai (default), native or optimum")


def add_speculation_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "speculative decoding (prompt lookup on the genai and native engines, a draft model on genai)")
    way = group.add_mutually_exclusive_group()
    way.add_argument("--prompt-lookup", action="store_true",
                     help="propose tokens from n-grams of the prompt: pays when the answer quotes it "
                          "(summarise, extract, rewrite)")
    way.add_argument("--draft-model", metavar="MODEL", default=None,
                     help="propose tokens with this smaller model (same tokenizer as --model)")
    group.add_argument("--num-assistant-tokens", type=int, default=None, metavar="N",
                       help="most tokens proposed per step (default 5; on AVX2-only CPUs 3 for prompt lookup, "
                            "2 for a draft model; the native engine starts at 3 and grows while they are taken)")
    group.add_argument("--max-ngram-size", type=int, default=None, metavar="N",
                       help="longest prompt n-gram matched by --prompt-lookup (default 6)")


def speculation_from_args(args: argparse.Namespace) -> Speculation | None:
    """The ``Speculation`` the flags ask for, or None for plain decoding."""
    from vinolm.engines.base import MAX_NGRAM, Speculation

    if not getattr(args, "prompt_lookup", False) and not getattr(args, "draft_model", None):
        given = [flag for flag in ("num_assistant_tokens", "max_ngram_size") if getattr(args, flag, None) is not None]
        if given:
            raise InvalidRequest(f"--{given[0].replace('_', '-')} tunes speculative decoding: add --prompt-lookup "
                                 "or --draft-model", param=given[0])
        return None
    for flag in ("num_assistant_tokens", "max_ngram_size"):
        if getattr(args, flag) is not None and not 1 <= getattr(args, flag) <= SPECULATION_LIMIT:
            raise InvalidRequest(f"--{flag.replace('_', '-')} must be between 1 and {SPECULATION_LIMIT}", param=flag)
    return Speculation(draft=args.draft_model, num_assistant_tokens=args.num_assistant_tokens,
                       max_ngram_size=args.max_ngram_size or MAX_NGRAM)


def add_generation_args(parser: argparse.ArgumentParser, max_new_tokens: int = 256) -> None:
    group = parser.add_argument_group("generation")
    group.add_argument("--max-new-tokens", "-n", type=int, default=max_new_tokens)
    group.add_argument("--greedy", action="store_true", help="always pick the most likely token")
    group.add_argument("--temperature", type=float, default=None, help="0 = greedy (default 0.7)")
    group.add_argument("--top-p", type=float, default=0.9)
    group.add_argument("--top-k", type=int, default=0, help="0 = off")
    group.add_argument("--min-p", type=float, default=0.0)
    group.add_argument("--repetition-penalty", type=float, default=1.0)
    group.add_argument("--seed", type=int, default=None)
    group.add_argument("--stop", action="append", default=[], help="stop string, repeatable")
    group.add_argument("--num-beams", type=int, default=1, help="beam search (implies --greedy)")
    group.add_argument("--ignore-eos", action="store_true", help="generate exactly --max-new-tokens")
    shape = group.add_mutually_exclusive_group()
    shape.add_argument("--json-schema", metavar="FILE", default=None,
                       help="answer with JSON valid against the schema in FILE")
    shape.add_argument("--format", choices=["json"], default=None, help="json: answer with any JSON object")
    shape.add_argument("--regex", metavar="RE", default=None, help="answer with text matching RE (whole answer)")
    shape.add_argument("--grammar", metavar="FILE", default=None, help="answer in the GBNF grammar in FILE")
    shape.add_argument("--choice", metavar="TEXT", action="append", default=None,
                       help="answer with exactly one of these texts, repeatable")
    add_speculation_args(parser)


def params_from_args(args: argparse.Namespace) -> GenerationParams:
    from vinolm.types import GenerationParams

    if args.num_beams > 1 and args.temperature:
        raise InvalidRequest("--num-beams is beam search, which does not sample: drop --temperature",
                             param="num_beams")
    temperature = 0.0 if args.greedy or args.num_beams > 1 else (
        0.7 if args.temperature is None else args.temperature
    )
    return GenerationParams(
        max_new_tokens=args.max_new_tokens,
        temperature=temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        min_p=args.min_p,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
        stop=list(args.stop),
        num_beams=args.num_beams,
        ignore_eos=args.ignore_eos,
        constraint=constraint_from_args(args),
    ).validated()


def constraint_from_args(args: argparse.Namespace) -> Constraint | None:
    """The constraint the flags ask for, compiled before any model loads: a file that cannot
    be read or a grammar that does not compile is one line (exit 2)."""
    from vinolm.engines.constraints import compile_constraint

    constraint = _constraint(args)
    if constraint is not None:
        compile_constraint(constraint)
    return constraint


def _constraint(args: argparse.Namespace) -> Constraint | None:
    from vinolm.types import Constraint

    if args.json_schema is not None:
        return Constraint("json_schema", schema=json_schema_file(args.json_schema))
    if args.format == "json":
        return Constraint("json_object")
    if args.regex is not None:
        return Constraint("regex", pattern=args.regex)
    if args.grammar is not None:
        return Constraint("grammar", grammar=_read(args.grammar, "--grammar"))
    if args.choice:
        return Constraint("choice", choices=tuple(args.choice))
    return None


def json_schema_file(path: str) -> Any:
    """The JSON a ``--json-schema`` file holds (``generate``, ``bench``), or one line naming the file."""
    text = _read(path, "--json-schema")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidRequest(f"--json-schema {path} is not JSON: {exc}", param="json_schema") from None


def _read(path: str, flag: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise InvalidRequest(f"{flag} {path}: {reason}", param=flag.lstrip("-").replace("-", "_")) from None


def engine_from_args(args: argparse.Namespace, batching: bool = False, **options: Any) -> Engine:
    """Resolve --model (exporting on first use), then load --engine on --device."""
    from vinolm.engines import engine_class, load_engine
    from vinolm.engines.base import EngineOptions
    from vinolm.engines.ovconfig import check_device, parse_ov_config
    from vinolm.models import prepare

    name = getattr(args, "engine", "genai")
    engine_class(name)  # unknown engine: fail before exporting anything
    ov_config = parse_ov_config(args.ov_config)
    check_device(args.device)
    model = prepare(args.model, args.weight_format, progress=status)
    return load_engine(name, model, EngineOptions(device=args.device, ov_config=ov_config, batching=batching,
                                                  speculation=speculation_from_args(args), **options))


def status(message: str) -> None:
    """Progress for humans, on stderr so stdout stays the answer."""
    print(f"vinolm: {message}", file=sys.stderr, flush=True)


def print_response(response: Response, as_json: bool = False) -> None:
    """Stream the answer to stdout and the metrics to stderr, or print one JSON object."""
    if as_json:
        import json

        text = response.text()
        print(json.dumps({"text": text, "finish_reason": response.finish_reason,
                          "metrics": response.metrics.to_dict()}, ensure_ascii=False))
        return
    for piece in response:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    print(metrics_line(response.metrics), file=sys.stderr)


def metrics_line(metrics: Metrics) -> str:
    line = (
        f"input tokens {metrics.input_tokens} · generated tokens {metrics.output_tokens} · "
        f"time to first token {metrics.ttft * 1000:.0f} ms · "
        f"{metrics.decode_tokens_per_s:.1f} tokens/s · total {metrics.total_time:.2f} s"
    )
    if metrics.trimmed_messages:
        line += f" · {metrics.trimmed_messages} old messages dropped to fit the context"
    if metrics.draft_tokens:
        line += f" · {metrics.draft_accepted} of {metrics.draft_tokens} proposed tokens accepted"
    return line
