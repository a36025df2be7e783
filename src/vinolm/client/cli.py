"""``vinolm client``: send prompts to a running server, print the answers and the timings."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vinolm.client.common import OnText, RunResult, Target

PROTOCOLS = ("openai", "kserve-rest", "grpc")
DEFAULT_URLS = {"openai": "127.0.0.1:8000", "kserve-rest": "127.0.0.1:8000", "grpc": "127.0.0.1:9000"}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "client", help="query a running vinolm server (OpenAI, KServe REST or gRPC)",
        description="Send prompts to a running `vinolm serve`; print each completion, then the number "
        "of tokens, tokens per second, time per token and total time (streaming: also the number of "
        "responses, first and average response time).",
    )
    p.add_argument("--url", default=None,
                   help="HOST:PORT of the server (default 127.0.0.1:8000 for HTTP, 127.0.0.1:9000 for gRPC)")
    p.add_argument("--protocol", choices=PROTOCOLS, default="grpc")
    p.add_argument("--model", default=None, help="served model name (default: smollm2-135m)")
    p.add_argument("--stream", action="store_true", help="print text as it is generated")
    p.add_argument("--api-key", default=os.environ.get("VINOLM_API_KEY"),
                   help="the server's API key (default: $VINOLM_API_KEY)")
    p.add_argument("--max-tokens", type=int, default=None, help="generated tokens per prompt at most")
    p.add_argument("--retries", type=int, default=3,
                   help="times to send again a request that got no token yet (connection refused, "
                        "503 while a server drains, 429, a stream closed before its first token), "
                        "with jittered exponential backoff; 0 = never")
    p.add_argument("--session", default=None, metavar="ID",
                   help="name the conversation: sent as header x-session-id (gRPC metadata session_id), "
                        "it keeps requests on one replica of `vinolm serve --replicas`, where the "
                        "conversation's history is cached")
    p.add_argument("-p", "--prompt", dest="prompts", action="append", required=True,
                   help="a prompt; repeat to send several in one request")
    p.set_defaults(func=cmd_client)


def cmd_client(args: argparse.Namespace) -> int:
    from vinolm.client import report
    from vinolm.client.common import RetryPolicy, Target
    from vinolm.errors import InvalidRequest
    from vinolm.models import DEFAULT_MODEL

    if args.retries < 0:
        raise InvalidRequest("--retries must be >= 0")
    if args.max_tokens is not None and args.max_tokens < 1:
        raise InvalidRequest("--max-tokens must be >= 1")
    if args.stream and args.protocol == "kserve-rest":  # before anything is printed
        raise InvalidRequest("KServe REST does not stream; use --protocol grpc or openai with --stream")
    target = Target(url=args.url or DEFAULT_URLS[args.protocol], model=args.model or DEFAULT_MODEL,
                    api_key=args.api_key, max_tokens=args.max_tokens, retry=RetryPolicy(attempts=args.retries + 1),
                    session=args.session)
    live = args.stream and len(args.prompts) == 1
    if live:
        print(f"Question:\n{args.prompts[0]}\n", flush=True)
    result = _run(args.protocol, target, args.prompts, args.stream, _echo if live else None)
    if live:
        print("\n")
    else:
        print(report.completions_text(result))
    print("\n".join(report.metrics_lines(result, args.stream)))
    return 0


def _echo(index: int, text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _run(protocol: str, target: Target, prompts: list[str], stream: bool, on_text: OnText | None) -> RunResult:
    if protocol == "openai":
        from vinolm.client import openai_client

        return openai_client.run(target, prompts, stream, on_text)
    if protocol == "kserve-rest":
        from vinolm.client import kserve_rest

        return kserve_rest.run(target, prompts)
    from vinolm.client import kserve_grpc

    return kserve_grpc.run(target, prompts, stream, on_text)
