"""The ``vinolm`` command. Thin: parse, call the library, turn VinolmError into one line.

Each command module exposes ``register(subparsers)``; its handler is stored as
``func`` and imports what it needs only when run, so ``vinolm --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from collections.abc import Sequence

from vinolm.errors import EngineError, VinolmError

COMMAND_MODULES = (
    "vinolm.commands",
    "vinolm.store_cli",
    "vinolm.chat.cli",
    "vinolm.server.cli",
    "vinolm.client.cli",
    "vinolm.ui.cli",
    "vinolm.bench.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vinolm",
        description="Run Hugging Face language models compressed with OpenVINO on x86 CPUs (Intel or AMD).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):  # a command set not built yet
                continue
            raise
        module.register(sub)
    return parser


def _terminated(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C does, so an export in progress removes its temporary folder
    (by default the process just died, leaving one that looked like a model). ``vinolm serve``
    replaces this handler with its own drain."""
    print("vinolm: terminated", file=sys.stderr)
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if in_main else None
    try:
        return int(args.func(args) or 0)
    except VinolmError as exc:
        print(f"vinolm: error: {exc.message}", file=sys.stderr)
        return 1 if isinstance(exc, EngineError) else 2
    except KeyboardInterrupt:
        print("vinolm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
