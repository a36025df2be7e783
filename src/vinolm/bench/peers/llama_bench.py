"""llama.cpp peer, as its own users measure it: ``llama-bench`` (C++, no Python in the loop).

    python -m vinolm.bench.peers.llama_bench --model PATH.gguf \\
        --prompt-tokens 990 --new-tokens 128 --runs 5 --threads 2

Two ``llama-bench`` invocations: ``-p N -n 0`` times the prompt (prefill of N tokens into
an empty cache), ``-p 0 -n M -d N`` times M generated tokens after N tokens of context,
which is where vinolm's decode numbers are taken too (after the prompt). Each times both
flash-attention settings and keeps the faster, as a user who tries both would run it: which
wins depends on the CPU (on an Intel Xeon with AMX, 2026-12-06, llama-bench's default, on,
decoded the default model at half the speed of off after 990 tokens, 34 vs 70 tok/s;
docs/benchmarks.md section 18). Each of the ``--runs`` repetitions becomes one run row
(``samples_ts``), so the pooled statistics are the same as every other row's. Prints ONE
JSON line; a ``skipped`` line when ``make peers`` has not built ``llama-bench``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
from typing import Any

from vinolm.bench.peers.llamacpp import job_arguments, llama_tool, parse_job
from vinolm.bench.schema import emit, error_line, result_line, skip_line

PEER = "llama-bench"
#: llama-bench's ``-fa`` values, each timed.
FLASH_ATTN = ("0", "1")


def fastest(tests: list[dict[str, Any]]) -> dict[str, Any]:
    """The test of the highest median speed."""
    return max(tests, key=lambda test: statistics.median(test["samples_ts"]))


def llama_bench(args: argparse.Namespace, *flags: str) -> dict[str, Any]:
    """The faster flash-attention setting's test of one measure."""
    cmd = [llama_tool("llama-bench"), "-m", args.model, "-t", str(args.threads), "-r", str(args.runs),
           "-fa", ",".join(FLASH_ATTN), "-o", "json", *([] if args.warmup else ["--no-warmup"]), *flags]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"llama-bench exited with {done.returncode}: {done.stderr[-1500:]}")
    tests = json.loads(done.stdout)
    if len(tests) != len(FLASH_ATTN):
        raise RuntimeError(f"llama-bench reported {len(tests)} tests, expected {len(FLASH_ATTN)}")
    return dict(fastest(tests))


def runs_of(prompt: dict[str, Any], decode: dict[str, Any], prompt_tokens: int) -> list[dict[str, Any]]:
    """One run per repetition: prefill speed of repetition i with decode speed of repetition i."""
    runs = []
    for pp, tg in zip(prompt["samples_ts"], decode["samples_ts"], strict=True):
        runs.append({"ttft_s": prompt_tokens / pp, "prefill_tps": pp, "decode_tps": tg, "tpot_s": 1.0 / tg,
                     "prompt_tokens": prompt_tokens, "new_tokens": int(decode["n_gen"])})  # fmt: skip
    return runs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vinolm.bench.peers.llama_bench", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="path to a .gguf file")
    job_arguments(p, warmup_help="0 = llama-bench --no-warmup; else its own warm-up run")
    p.add_argument("--threads", type=int, default=2)
    args = parse_job(p, argv)
    try:
        llama_tool("llama-bench")
    except FileNotFoundError as exc:
        emit(skip_line(PEER, str(exc)))
        return 0
    try:
        prompt = llama_bench(args, "-p", str(args.prompt_tokens), "-n", "0")
        decode = llama_bench(args, "-p", "0", "-n", str(args.new_tokens), "-d", str(args.prompt_tokens))
        runs = runs_of(prompt, decode, args.prompt_tokens)
    except (RuntimeError, OSError, ValueError, KeyError, subprocess.TimeoutExpired) as exc:
        emit(error_line(PEER, f"{type(exc).__name__}: {exc}"))
        return 1
    emit(result_line(PEER, str(prompt.get("build_commit", "unknown")), 0.0, runs, model=args.model,
                     threads=args.threads, cpu_info=prompt.get("cpu_info"), backends=prompt.get("backends"),
                     flash_attn={"prefill": prompt.get("flash_attn"), "decode": decode.get("flash_attn")},
                     model_type=prompt.get("model_type"), model_size=prompt.get("model_size"),
                     peak_rss_mb=round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
