"""Peer: openvino-genai's ``LLMPipeline`` called directly, timed by its own ``perf_metrics``.

    python -m vinolm.bench.peers.genai_direct --model IR_FOLDER --prompt-tokens 990 \\
        --new-tokens 128 --runs 5 [--ov-config KEY=VALUE ...]

This is what a user writing the openvino.genai samples gets: the pipeline built with the
device name only (no properties unless given), greedy, ``ignore_eos``. Set next to
vinolm's genai engine, it shows what vinolm's own layers (tokenizing, streaming, text
detokenization, threads) cost. TTFT and TPOT are genai's (``get_ttft``, ``get_tpot``);
each run's prompt is a new variant of the shared filler cut to exactly
``--prompt-tokens`` ids (genai's prefix cache would otherwise serve the prompt).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from vinolm.bench.peers.llamacpp import job_arguments, parse_job
from vinolm.bench.schema import emit, error_line, prompt_ids, result_line, run_record, skip_line
from vinolm.engines.ovconfig import parse_ov_config
from vinolm.errors import EngineError, InvalidRequest

PEER = "openvino-genai direct"


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import openvino as ov
    import openvino_genai as ov_genai

    from vinolm.engines.common import first_line
    from vinolm.engines.ovconfig import cap_properties
    from vinolm.kernels import folder_extensions, genai_properties

    started = time.perf_counter()
    try:
        pipe = ov_genai.LLMPipeline(args.model, args.device, **{**cap_properties(), **args.properties},
                                    **genai_properties(folder_extensions(args.model)))
    except RuntimeError as exc:
        raise EngineError(f"openvino-genai cannot load {args.model}: {first_line(exc)}") from exc
    load_s = time.perf_counter() - started
    tokenizer = pipe.get_tokenizer()

    def encode(text: str) -> list[int]:
        ids: list[int] = tokenizer.encode(text).input_ids.data[0].tolist()
        return ids

    def generate(variant: int, new_tokens: int) -> dict[str, Any]:
        array = np.asarray([prompt_ids(encode, args.prompt_tokens, variant)], dtype=np.int64)
        inputs = ov_genai.TokenizedInputs(ov.Tensor(array), ov.Tensor(np.ones_like(array)))
        config = ov_genai.GenerationConfig(max_new_tokens=new_tokens, ignore_eos=True, do_sample=False)
        started = time.perf_counter()
        perf = pipe.generate(inputs, config).perf_metrics
        wall = time.perf_counter() - started
        count = perf.get_num_generated_tokens()
        if count != new_tokens:
            raise RuntimeError(f"generated {count} tokens, wanted {new_tokens}")
        tpot = perf.get_tpot().mean / 1000 if count > 1 else None
        # genai's own clock, plus the caller's: the difference is time outside its metrics
        ttft = perf.get_ttft().mean / 1000
        return {**run_record(args.prompt_tokens, count, ttft, tpot), "wall_s": round(wall, 6)}

    for variant in range(args.warmup):
        generate(variant, min(args.new_tokens, 8))
    runs = [generate(args.warmup + i, args.new_tokens) for i in range(args.runs)]
    return result_line(PEER, f"openvino-genai {ov_genai.__version__}", load_s, runs,
                       model=args.model, prompt_tokens=args.prompt_tokens, ov_config=args.ov_config)  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m vinolm.bench.peers.genai_direct", description=__doc__.splitlines()[0]
    )
    p.add_argument("--model", required=True, help="an OpenVINO IR folder")
    p.add_argument("--device", default="CPU")
    p.add_argument("--ov-config", action="append", default=[], metavar="KEY=VALUE")
    job_arguments(p)
    args = parse_job(p, argv)
    try:
        args.properties = parse_ov_config(args.ov_config)
    except InvalidRequest as exc:
        p.error(exc.message)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import openvino_genai  # noqa: F401
    except ImportError:
        emit(skip_line(PEER, "openvino-genai is not installed (pip install openvino-genai)"))
        return 0
    try:
        emit(measure(args))
    except Exception as exc:  # noqa: BLE001 - one line whatever happens
        emit(error_line(PEER, f"{type(exc).__name__}: {exc}"))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
