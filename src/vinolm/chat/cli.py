"""``vinolm chat`` and ``vinolm instruct``."""

from __future__ import annotations

import argparse
import sys

from vinolm.cliutil import (
    add_generation_args,
    add_model_args,
    engine_from_args,
    params_from_args,
    print_response,
)
from vinolm.errors import InvalidRequest


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="chat in the terminal (streaming; Ctrl-C stops an answer)")
    add_model_args(p)
    add_generation_args(p, max_new_tokens=512)
    p.add_argument("--system", default=None, help="system message (default: the model's own)")
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("instruct", help="follow one instruction with the model's instruction template")
    p.add_argument("instruction")
    add_model_args(p)
    add_generation_args(p)
    p.set_defaults(func=cmd_instruct)


def cmd_chat(args: argparse.Namespace) -> int:
    from vinolm.chat.repl import ChatRepl
    from vinolm.chat.session import Chat

    if sys.stdin is None or sys.stdin.closed:  # checked before the model loads for nothing
        raise InvalidRequest("vinolm chat reads your messages from standard input, which is closed")
    params = params_from_args(args)
    # Prefix caching (genai's batching pipeline) lets each turn reuse the KV cache of the
    # history instead of re-encoding it; the native engine reuses its cache itself.
    engine = engine_from_args(args, batching=args.engine == "genai", max_concurrency=1)
    return ChatRepl(Chat(engine, system=args.system, params=params)).run()


def cmd_instruct(args: argparse.Namespace) -> int:
    from vinolm.api import Model

    params = params_from_args(args)
    response = Model(engine_from_args(args)).instruct(args.instruction, **params.to_dict())
    print_response(response)
    return 0
