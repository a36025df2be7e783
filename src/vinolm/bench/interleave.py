"""Configurations side by side in ONE process, alternating run by run.

    python -m vinolm.bench.interleave --row direct --row direct-stream --row genai \\
        [--row native@KEY=V,KEY=V ...] [--model M] [--weight-format int4] \\
        [--prompt-tokens 990] [--new-tokens 128] [--runs 9] [--json]

On a shared machine two processes run minutes apart can differ by 20% (other tenants,
clock boost), more than most settings change; rows that alternate run by run in one
process see the same machine. A row is ``KIND`` (compiled with vinolm's default
properties) or ``KIND@KEY=V,KEY=V`` (exactly those over OpenVINO's own defaults; ``KIND@``
alone: OpenVINO's defaults), so a sweep says every property it sets. ``KIND:MODEL`` runs
another export of the same model (a folder made by ``vinolm export``, another weight format
or quantization; for ``direct`` rows also a ``.gguf`` file, which openvino-genai reads
itself), so weight formats compare in one process too; prompts are cut with
``--model``'s tokenizer, which the exports of one model share:

* ``direct``: openvino-genai ``LLMPipeline.generate`` on token ids, no streamer (the floor);
* ``direct-stream``: the same with a Python streamer that only records the time;
* ``genai`` / ``native``: vinolm's engines as a library user runs them (text in, chunks out);
* ``genai-lookup``: the genai engine with prompt-lookup speculative decoding;
* ``genai-draft``: the genai engine with ``--draft-model`` proposing the tokens;
* ``native-lookup``: the native engine with prompt lookup (its own loop).

A speculative kind may name its own number of proposed tokens, ``genai-lookup/3``, and a
lookup kind also the longest n-gram it matches, ``native-lookup/3/6``, so several settings
compare in one process (``--num-assistant-tokens`` and ``--max-ngram-size`` are the rest's).

A speculative row's answers are compared with its plain twin's (``genai`` or ``native``,
same model and properties), which speculative decoding must reproduce; every other row's
with the first row's.

``--task`` picks the work: ``filler`` (default) is a prompt of exactly ``--prompt-tokens``
tokens continued for exactly ``--new-tokens`` (EOS ignored); ``rewrite`` and ``copy`` ask
the chat model to rewrite a passage of plain prose (``grounded.txt``, whole paragraphs)
in its own words, or to repeat it word for word (input-grounded work, where prompt lookup
pays), and ``story`` asks for a story (free generation, where it should cost nothing);
they end at EOS or ``--new-tokens``, and the table says whether every row answered exactly
as the first.
``--num-assistant-tokens`` and ``--max-ngram-size`` set the speculative rows' search.

Every run has a prompt of its own (no prefix-cache hit): the n-th run's is the same in
every command, whatever the rows (the warm-ups take the one after the last run's). TTFT:
call to first token; TPOT: (last token - first token) / (tokens - 1), on the caller's
clock except for ``direct``, which has no streamer and reports genai's own
``perf_metrics``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vinolm.bench.report import run_tool
from vinolm.bench.schema import check_context, prompt_text
from vinolm.bench.tasks import TASKS, task_prompts
from vinolm.bench.worker import request
from vinolm.engines.common import first_line
from vinolm.errors import EngineError, InvalidRequest
from vinolm.export import WEIGHT_FORMATS
from vinolm.kernels import extensions_for, genai_properties
from vinolm.types import SPECULATION_LIMIT

Timed = tuple[float, float, str | None]  # (ttft_s, tpot_s, the answer; None: a direct row keeps none)
Run = Callable[[list[int], str, int], Timed]  # (prompt ids, the same as text, new tokens)
ANSWERED = {True: "yes", False: "no", None: "–"}  # the table's column of same answers
KINDS = ("direct", "direct-stream", "genai", "native", "genai-lookup", "genai-draft", "native-lookup")
SPECULATIVE = ("genai-lookup", "genai-draft", "native-lookup")


@dataclass
class Row:
    label: str
    run: Run
    properties: dict[str, Any]


@dataclass
class RowSpec:
    """``KIND[/N[/G]][:MODEL][@K=V,...]``: ``properties`` None means vinolm's defaults;
    ``proposed`` (N) None, ``--num-assistant-tokens``'s count; ``ngram`` (G) None,
    ``--max-ngram-size``."""

    kind: str
    model: str | None
    properties: dict[str, Any] | None
    proposed: int | None = None
    ngram: int | None = None


def parse_row(spec: str) -> RowSpec:
    """``genai:/x/int4@K=V,K=V`` -> ("genai", "/x/int4", {K: V}); ``genai`` -> ("genai", None, None);
    ``genai-lookup/3`` -> ("genai-lookup", None, None, 3); ``native-lookup/3/6`` -> (..., 3, 6)."""
    from vinolm.engines.ovconfig import parse_ov_config

    head, at, props = spec.partition("@")
    kind, colon, model = head.partition(":")
    kind, slash, counts = kind.partition("/")
    numbers = counts.split("/") if slash else []
    if kind not in KINDS:
        raise InvalidRequest(f"--row {spec!r}: the kind must be one of {', '.join(KINDS)}")
    if numbers and (kind not in SPECULATIVE or len(numbers) > 2
                    or not all(n.isdigit() and 1 <= int(n) <= SPECULATION_LIMIT for n in numbers)
                    or (len(numbers) == 2 and kind == "genai-draft")):
        raise InvalidRequest(f"--row {spec!r}: only a speculative kind ({', '.join(SPECULATIVE)}) takes /N, "
                             f"1 to {SPECULATION_LIMIT} tokens proposed per step, and a lookup kind /N/G, G from 1 to "
                             f"{SPECULATION_LIMIT} the longest n-gram")
    if colon and not model:
        raise InvalidRequest(f"--row {spec!r}: name the model after ':' (a folder made by vinolm export)")
    if model.endswith(".gguf") and not Path(model).is_file():
        raise InvalidRequest(f"--row {spec!r}: no GGUF file {model}")
    proposed, ngram = ([int(n) for n in numbers] + [None, None])[:2]
    return RowSpec(kind, model or None, parse_ov_config([p for p in props.split(",") if p], f"--row {spec!r}") if at else None,
                   proposed, ngram)


def direct_run(pipe: Any, streaming: bool) -> Run:
    import numpy as np
    import openvino as ov
    import openvino_genai as ov_genai

    def run(ids: list[int], _: str, new_tokens: int) -> Timed:
        array = np.asarray([ids], dtype=np.int64)
        inputs = ov_genai.TokenizedInputs(ov.Tensor(array), ov.Tensor(np.ones_like(array)))
        config = ov_genai.GenerationConfig(max_new_tokens=new_tokens, ignore_eos=True, do_sample=False)
        stamps: list[float] = []

        def streamer(_: Any) -> Any:
            stamps.append(time.perf_counter())
            return ov_genai.StreamingStatus.RUNNING

        started = time.perf_counter()
        perf = pipe.generate(inputs, config, streamer if streaming else None).perf_metrics
        if not streaming:
            return perf.get_ttft().mean / 1000, perf.get_tpot().mean / 1000, None
        return stamps[0] - started, (stamps[-1] - stamps[0]) / (len(stamps) - 1), None

    return run


def engine_run(engine: Any, task: str) -> Run:
    from vinolm.types import GenerationParams, Message, Request

    def run(_: list[int], text: str, new_tokens: int) -> Timed:
        work = request(text, new_tokens) if task == "filler" else Request(
            messages=[Message("user", text)], params=GenerationParams(max_new_tokens=new_tokens))
        started = time.perf_counter()
        stamps, pieces = [], []
        for chunk in engine.generate(work):
            pieces.append(chunk.text)
            stamps.extend([time.perf_counter()] * len(chunk.token_ids))  # a checked batch of tokens
        tpot = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else float("nan")
        return stamps[0] - started, tpot, "".join(pieces)

    return run


def build_rows(specs: list[str], model: Any, task: str = "filler", lookup: tuple[int | None, int | None] = (None, None),
               draft: str | None = None) -> list[Row]:
    """``lookup``: (tokens proposed per step, longest n-gram; None for the engines' defaults)
    of the speculative rows; ``draft``: the model that proposes the ``genai-draft`` rows' tokens."""
    import openvino_genai as ov_genai

    from vinolm.engines import load_engine
    from vinolm.engines.base import MAX_NGRAM, EngineOptions, Speculation
    from vinolm.engines.ovconfig import compile_properties
    from vinolm.models import prepare

    rows = []
    for spec in specs:
        row = parse_row(spec)
        user = row.properties
        if row.kind.startswith("direct"):
            # openvino-genai reads a GGUF itself (its own Q4_0/Q8_0 -> OpenVINO conversion).
            gguf = row.model if row.model and row.model.endswith(".gguf") else None
            folder = None if gguf else prepare(row.model, progress=lambda _: None) if row.model else model
            props = compile_properties("CPU", user or {}, None, user is None, folder.weights if folder else None)
            try:
                pipe = ov_genai.LLMPipeline(gguf or str(folder.path), "CPU", **props,
                                            **genai_properties(extensions_for(folder.info) if folder else []))
            except RuntimeError as exc:
                raise EngineError(f"openvino-genai cannot load {gguf or folder.path}: {first_line(exc)}") from exc
            rows.append(Row(spec, direct_run(pipe, row.kind == "direct-stream"), props))
        else:
            folder = prepare(row.model, progress=lambda _: None) if row.model else model
            proposed, ngram = row.proposed or lookup[0], row.ngram or lookup[1] or MAX_NGRAM
            speculation = {"genai-lookup": Speculation(None, proposed, ngram),
                           "native-lookup": Speculation(None, proposed, ngram),
                           "genai-draft": Speculation(draft, proposed, ngram)}
            options = EngineOptions(ov_config=user or {}, vinolm_defaults=user is None,
                                    speculation=speculation.get(row.kind))
            engine = load_engine(row.kind.split("-")[0], folder, options)
            rows.append(Row(spec, engine_run(engine, task), engine.properties))
    return rows


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import openvino as ov

    from vinolm.engines.base import MAX_NGRAM
    from vinolm.engines.native_tokenizer import TokenizerIR
    from vinolm.models import prepare

    model = prepare(args.model, args.weight_format, progress=lambda _: None)
    if args.task == "filler":  # the tasks' prompts are whole paragraphs, as many as fit
        check_context(model, args.prompt_tokens + args.new_tokens, "--prompt-tokens and --new-tokens")
    rows = build_rows(args.row, model, args.task, (args.num_assistant_tokens, args.max_ngram_size), args.draft_model)
    tok = TokenizerIR(ov.Core(), model.path)
    message = None if args.task == "filler" else task_prompts(args.task, args.prompt_tokens)

    def prompt(variant: int) -> tuple[list[int], str]:
        text = prompt_text(tok.encode, tok.decode, args.prompt_tokens, variant) if message is None \
            else message(variant)
        return tok.encode(text), text

    for row in rows:  # warm-up on a text no run asks for: the runs' texts do not depend on the rows
        row.run(*prompt(args.runs), 8)
    timings: dict[str, list[Timed]] = {row.label: [] for row in rows}
    lengths = []
    for variant in range(args.runs):
        work = prompt(variant)
        lengths.append(len(work[0]))  # the same work for every row of a round: their answers can be compared
        for row in rows:
            timings[row.label].append(row.run(*work, args.new_tokens))
    first = statistics.median(t for _, t, _ in timings[rows[0].label])
    table = {}
    for row in rows:
        ttft = statistics.median(a for a, _, _ in timings[row.label])
        tpot = statistics.median(t for _, t, _ in timings[row.label])
        other = timings[plain_twin(row.label, timings)]
        pairs = list(zip(timings[row.label], other, strict=True))
        # None where either side is a direct row: it keeps no answer to compare
        same = None if any(a[2] is None or b[2] is None for a, b in pairs) else all(a[2] == b[2] for a, b in pairs)
        # Per run, because the texts differ more than the settings (prompt lookup: 1.0-2.6x).
        speedups = [b[1] / a[1] for a, b in pairs]
        table[row.label] = {"ttft_ms": round(ttft * 1000, 1), "tpot_ms": round(tpot * 1000, 3),
                            "decode_tps": round(1 / tpot, 1), "prefill_tps": round(statistics.median(lengths) / ttft),
                            "tpot_vs_first": round(tpot / first, 3), "same_answers": same,
                            "speedup_per_run": [round(min(speedups), 2), round(statistics.median(speedups), 2),
                                                round(max(speedups), 2)],
                            "properties": row.properties, "runs": timings[row.label]}  # fmt: skip
    return {"model": str(model.path), "task": args.task, "runs": args.runs,
            "lookup": {"num_assistant_tokens": args.num_assistant_tokens,
                       "max_ngram_size": args.max_ngram_size or MAX_NGRAM},
            "draft_model": args.draft_model, "prompt_tokens": statistics.median(lengths),
            "new_tokens": args.new_tokens, "rows": table}  # fmt: skip


def plain_twin(label: str, labels: Any) -> str:
    """The row a row's answers are compared with: a speculative row's plain twin (same
    engine, model and properties) when there is one, which speculation must answer like;
    else the first row."""
    kind = label.split(":")[0].split("@")[0]
    twin = kind.split("-")[0] + label[len(kind):]
    return twin if kind.split("/")[0] in SPECULATIVE and twin in labels else next(iter(labels))


def markdown(result: dict[str, Any]) -> str:
    lines = [(f"| row (same process, interleaved; task {result['task']}) | TTFT ms | prefill tok/s | TPOT ms "
              "| decode tok/s | TPOT vs first row | same answers (as the plain twin, else the first row) "
              "| decode speed-up over that row, per run: median (min-max) |"),
             "|---|---:|---:|---:|---:|---:|:-:|---:|"]  # fmt: skip
    for i, (label, r) in enumerate(result["rows"].items()):
        low, mid, high = r["speedup_per_run"]
        spread = f"{mid:.2f}x ({low:.2f}-{high:.2f})" if i else ""
        lines.append(f"| `{label}` | {r['ttft_ms']} | {r['prefill_tps']} | {r['tpot_ms']:.2f} | {r['decode_tps']} "
                     f"| {r['tpot_vs_first']:.3f}x | {ANSWERED[r['same_answers']]} | {spread} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vinolm.bench.interleave", description=__doc__.splitlines()[0])
    p.add_argument("--row", action="append", required=True, metavar="KIND[/N[/G]][:MODEL][@K=V,...]")
    p.add_argument("--model", default=None)
    p.add_argument("--weight-format", choices=WEIGHT_FORMATS, default="int4")
    p.add_argument("--prompt-tokens", type=int, default=990)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--runs", type=int, default=9)
    p.add_argument("--task", choices=TASKS, default="filler",
                   help="filler: exact token counts; rewrite / copy / story: chat work that ends at EOS")
    p.add_argument("--num-assistant-tokens", type=int, default=None,
                   help="speculative rows: tokens proposed per step (default: the engine's for this CPU)")
    p.add_argument("--max-ngram-size", type=int, default=None,
                   help="lookup rows: longest prompt n-gram matched (default: the engines')")
    p.add_argument("--draft-model", default=None, help="genai-draft rows: the model proposing tokens (same tokenizer)")
    return run_tool(p, argv, _problem, measure, markdown)


def _problem(args: argparse.Namespace) -> str | None:
    proposed = 1 if args.num_assistant_tokens is None else args.num_assistant_tokens
    if min(args.prompt_tokens, args.runs, proposed, args.max_ngram_size or 1) < 1 or args.new_tokens < 2:
        return "--prompt-tokens, --runs, --num-assistant-tokens and --max-ngram-size must be >= 1, --new-tokens >= 2"
    if max(proposed, args.max_ngram_size or 1) > SPECULATION_LIMIT:
        return f"--num-assistant-tokens and --max-ngram-size must be at most {SPECULATION_LIMIT}"
    for spec in args.row:
        try:
            parse_row(spec)
        except InvalidRequest as exc:
            return exc.message
    twice = next((spec for spec in args.row if args.row.count(spec) > 1), None)
    if twice:
        return (f"--row {twice!r} is given twice; rows are told apart by how they are written, so spell the "
                "twin otherwise (vinolm's defaults written out after @, or a folder with a trailing /)")
    if any(row.startswith("genai-draft") for row in args.row) != (args.draft_model is not None):
        return "genai-draft rows and --draft-model go together"
    if args.task != "filler" and any(row.startswith("direct") for row in args.row):
        return f"--task {args.task} runs vinolm's engines (chat messages); the direct rows take --task filler"
    return None


if __name__ == "__main__":
    raise SystemExit(main())
