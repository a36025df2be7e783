"""What the optimum-intel and PyTorch peers share: transformers ``generate``, timed per token.

Both peers are "the tutorials' path": a model object with transformers' ``generate``
and a streamer. A streamer sees the prompt first and then each new token as soon as it
is picked, which gives the same three instants every other peer reports (call, first
token, last token). ``min_new_tokens`` = ``max_new_tokens`` makes generation ignore EOS,
greedy decoding makes runs repeatable.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from vinolm.bench.peers.llamacpp import job_arguments, parse_job
from vinolm.bench.schema import emit, error_line, prompt_ids, result_line, skip_line, timed_record

#: load(args) -> (model with .generate, tokenizer, version string)
Loader = Callable[[argparse.Namespace], tuple[Any, Any, str]]


def timing_streamer() -> Any:
    """A transformers streamer recording when the first and the last new token arrive."""
    from transformers.generation.streamers import BaseStreamer

    class TimingStreamer(BaseStreamer):
        def __init__(self) -> None:
            self.calls = 0
            self.first = 0.0
            self.last = 0.0

        def put(self, value: Any) -> None:
            self.calls += 1  # call 1 is the prompt; each later call is one new token
            if self.calls == 2:
                self.first = time.perf_counter()
            self.last = time.perf_counter()

        def end(self) -> None:
            return None

    return TimingStreamer()


def generate_runs(model: Any, tokenizer: Any, args: argparse.Namespace) -> tuple[list[dict[str, Any]], int]:
    """Warm-up, then ``args.runs`` timed generations; returns the runs and the prompt length."""
    import torch

    def one(variant: int, new_tokens: int) -> dict[str, Any]:
        ids = prompt_ids(lambda text: tokenizer(text)["input_ids"], args.prompt_tokens, variant)
        input_ids = torch.tensor([ids], dtype=torch.long)
        mask = torch.ones_like(input_ids)
        streamer = timing_streamer()
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=new_tokens,
                                 min_new_tokens=new_tokens, do_sample=False, streamer=streamer,
                                 pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)  # fmt: skip
        count = out.shape[1] - len(ids)
        if count != new_tokens:
            raise RuntimeError(f"generated {count} tokens, wanted {new_tokens}")
        return timed_record(len(ids), count, start, streamer.first, streamer.last)

    for variant in range(args.warmup):
        one(variant, min(args.new_tokens, 8))
    return [one(args.warmup + i, args.new_tokens) for i in range(args.runs)], args.prompt_tokens


def parse_args(prog: str, description: str, argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--model", required=True)
    job_arguments(p)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    return parse_job(p, argv, least_threads=0)


def run_peer(peer: str, needs: tuple[str, ...], load: Loader, args: argparse.Namespace) -> int:
    """Skip when a library is missing, else load (timed), measure and print the line."""
    import importlib.util

    missing = [name for name in needs if importlib.util.find_spec(name) is None]
    if missing:
        emit(skip_line(peer, f"{', '.join(missing)} not installed (pip install 'vinolm[export]')"))
        return 0
    try:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        started = time.perf_counter()
        model, tokenizer, version = load(args)
        load_s = time.perf_counter() - started
        runs, n = generate_runs(model, tokenizer, args)
        emit(result_line(peer, version, load_s, runs, model=args.model, prompt_tokens=n,
                         threads=torch.get_num_threads()))  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - one line whatever happens
        emit(error_line(peer, f"{type(exc).__name__}: {exc}"))
        return 1
    return 0


def main_for(peer: str, needs: tuple[str, ...], load: Loader, doc: str, prog: str) -> None:
    sys.exit(run_peer(peer, needs, load, parse_args(prog, doc.splitlines()[0], None)))
