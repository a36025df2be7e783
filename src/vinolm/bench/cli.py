"""``vinolm bench``: engines and peers side by side, one process each, same run.

Only argparse here; the runner (subprocesses) and the report (matplotlib) are imported
when the command runs, so ``vinolm --help`` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vinolm.bench.constrained import DEFAULT
from vinolm.bench.runner import DEFAULT_ENGINES, ENGINE_PRESETS, PEERS
from vinolm.bench.server import PROTOCOLS
from vinolm.errors import InvalidRequest
from vinolm.export import WEIGHT_FORMATS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="measure engines and peers side by side (tables, JSON, plots)",
        description="Warm-up then K runs of fixed-length greedy generation (EOS ignored), each engine and "
                    "peer in its own process on the same prompt; reports median and min-max of load time, "
                    "TTFT, TPOT, decode and prefill tokens/s, throughput per concurrency level, peak RSS.",
    )  # fmt: skip
    p.add_argument("--model", "-m", default=None, help="model reference (default: smollm2-135m)")
    p.add_argument(
        "--weight-format",
        choices=WEIGHT_FORMATS,
        default=None,
        help="which export of the model to measure (default: the model's default)",
    )
    p.add_argument(
        "--engine",
        "-e",
        action="append",
        default=None,
        metavar="E",
        help="genai, native, optimum, native-hybrid, genai-f32 or ENGINE@KEY=V,KEY=V; repeatable "
        "(default: genai, native, native-hybrid, optimum)",
    )
    p.add_argument(
        "--ov-config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="OpenVINO property for every vinolm engine and the vinolm serve it starts, repeatable",
    )
    p.add_argument("--peers", action="store_true", help="add every peer: " + ", ".join(PEERS))
    p.add_argument("--peer", action="append", default=[], choices=PEERS, help="add one peer, repeatable")
    p.add_argument(
        "--llama-flash-attn", action="append", default=[], choices=("on", "off", "auto"),
        help="start llama-server with this -fa setting (default: its own), repeatable: a row each, and "
             "vinolm's server is compared with the fastest at each level",
    )  # fmt: skip
    p.add_argument("--prompt-tokens", type=int, default=990)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--runs", type=int, default=5, help="timed runs (rounds per concurrency level)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    p.add_argument(
        "--repeat", type=int, default=1, metavar="N",
        help="run the single-stream jobs N times round-robin (new processes) and pool their runs",
    )
    p.add_argument("--concurrency", default="1,4,8", help="throughput levels, e.g. 1,4,8 ('none' to skip)")
    p.add_argument("--url", default=None, help="measure this running server instead of starting one")
    p.add_argument("--url-label", default=None,
                   help="name of the --url server's rows (default: what its /v1/models says it is)")
    p.add_argument(
        "--protocol",
        action="append",
        choices=PROTOCOLS,
        default=None,
        help="server protocol for throughput, repeatable (default: openai)",
    )
    p.add_argument("--no-single", action="store_true", help="skip the single-stream section")
    p.add_argument(
        "--cold-start", action="store_true",
        help="add load times and first-request latency unloaded vs loaded: one vinolm serve of the model, "
             "its int4 (or int8) export and all-minilm-l6-v2, --runs rounds each",
    )  # fmt: skip
    p.add_argument(
        "--json-schema", nargs="?", const=DEFAULT, default=None, metavar="FILE",
        help="add, after each vinolm row, the same measurement under this JSON-schema constraint, and "
             f"their ratio (alone or '{DEFAULT}': a schema whose documents are longer than --new-tokens)",
    )  # fmt: skip
    p.add_argument(
        "--shapes",
        action="store_true",
        help="add the model shapes (the tutorials' 1.1B and 2.8B with random weights, the default model "
             "widened to 1.1B) in fp16/int8/int4 (builds them first: long)",
    )
    p.add_argument("--shape", action="append", default=[], metavar="NAME",
                   help="with --shapes: only this shape, repeatable (tiny-llama-1b-chat, dolly-v2-3b, "
                        "smollm2-135m-wide)")
    p.add_argument("--shape-format", action="append", default=[], choices=WEIGHT_FORMATS,
                   help="with --shapes: only this weight format, repeatable")
    p.add_argument("--threads", type=int, default=None, help="threads for llama.cpp (default: all cores)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per job before it is abandoned")
    p.add_argument(
        "--out", type=Path, default=Path("bench-results"), help="folder for bench.md/json and PNGs"
    )
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    import os

    from vinolm.bench import report, runner
    from vinolm.bench.schema import parse_levels
    from vinolm.client.common import http_base
    from vinolm.cliutil import status

    if min(args.prompt_tokens, args.new_tokens, args.runs, args.repeat) < 1 or args.warmup < 0:
        raise InvalidRequest("--prompt-tokens, --new-tokens, --runs and --repeat must be >= 1, --warmup >= 0")
    if args.timeout <= 0 or (args.threads is not None and args.threads < 1):
        raise InvalidRequest("--timeout must be above 0 and --threads at least 1")
    try:
        levels = parse_levels(args.concurrency)
    except ValueError:
        raise InvalidRequest(f"--concurrency takes levels like 1,4,8, got {args.concurrency!r}") from None
    check_sections(args, levels)
    check_engines(args.engine or [], args.ov_config)
    from vinolm.bench.shapes import SHAPES

    unknown = sorted(set(args.shape) - set(SHAPES))
    if unknown:
        raise InvalidRequest(f"unknown shape {unknown[0]!r}; use one of {', '.join(SHAPES)}")
    peers = list(PEERS) if args.peers else list(dict.fromkeys(args.peer))
    if args.llama_flash_attn and not {"llama.cpp", "llama-server"} & set(peers):
        raise InvalidRequest("--llama-flash-attn sets llama-server's flash attention: add --peer llama-server")
    json_schema = checked_schema(args.json_schema) if args.json_schema else None
    cfg = runner.BenchConfig(
        model=args.model, weight_format=args.weight_format, engines=args.engine or list(DEFAULT_ENGINES),
        peers=peers, prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens, runs=args.runs,
        warmup=args.warmup, levels=levels, url=http_base(args.url) if args.url else None, url_label=args.url_label,
        protocols=args.protocol or ["openai"],
        single=not args.no_single, shapes=args.shapes, ov_config=list(args.ov_config),
        threads=args.threads or os.cpu_count() or 1, timeout_s=args.timeout, repeat=args.repeat,
        cold_start=args.cold_start, llama_flash_attn=list(dict.fromkeys(args.llama_flash_attn)),
        shape_names=args.shape, shape_formats=args.shape_format, json_schema=json_schema,
    )  # fmt: skip
    results = runner.run(cfg, log=status)
    files = report.write(results, args.out)
    print(report.markdown(results))
    status("wrote " + ", ".join(str(f) for f in files))
    return 0


def check_sections(args: argparse.Namespace, levels: list[int]) -> None:
    """Refuse flags that would be ignored, and a run with nothing to measure, before anything starts."""
    for flag, value, needs, given in (("--shape", args.shape, "--shapes", args.shapes),
                                      ("--shape-format", args.shape_format, "--shapes", args.shapes),
                                      ("--url-label", args.url_label, "--url", args.url)):
        if value and not given:
            raise InvalidRequest(f"{flag} goes with {needs}")
    if args.url and "grpc" in (args.protocol or []):
        raise InvalidRequest("--protocol grpc needs the server's gRPC address, which --url does not give: measure "
                             "it with python -m vinolm.bench.server --url URL --grpc HOST:PORT")
    if args.no_single and not levels and not args.cold_start:
        raise InvalidRequest("--no-single with --concurrency none leaves nothing to measure")


def check_engines(specs: list[str], ov_config: list[str]) -> None:
    """Each ``--engine`` an engine vinolm has, with well-formed properties: refused here (exit 2),
    not as an error row per job."""
    from vinolm.bench.runner import engine_variant
    from vinolm.engines import ENGINES
    from vinolm.engines.ovconfig import parse_ov_config

    parse_ov_config(ov_config)
    for spec in specs:
        name, props = engine_variant(spec)
        if name not in ENGINES:
            raise InvalidRequest(f"--engine {spec!r}: unknown engine {name!r}; use one of {', '.join(ENGINES)}, "
                                 f"{', '.join(ENGINE_PRESETS)} or ENGINE@KEY=V,KEY=V")
        parse_ov_config(props, source=f"--engine {spec!r}")


def checked_schema(spec: str) -> str:
    """``--json-schema``'s value for the jobs: refused here (InvalidRequest, exit 2) when it
    cannot constrain, not once per row; a file by its absolute path, so bench.json says which."""
    from vinolm.bench.constrained import load_schema

    load_schema(spec)
    return spec if spec == DEFAULT else str(Path(spec).resolve())
