"""How long greedy decoding under one configuration stays token-for-token equal to another's.

    python -m vinolm.bench.agreement --row native@INFERENCE_PRECISION_HINT=f32 \\
        --row native@INFERENCE_PRECISION_HINT=f32,PREFILL_INFERENCE_PRECISION_HINT=bf16 \\
        [--row KIND@K=V,...] [--model M] [--weight-format int8] [--new-tokens 64] [--json]

The first row is the reference. Rows are written as in ``vinolm.bench.interleave``
(``KIND`` with vinolm's defaults, ``KIND@K=V,...`` exactly those over OpenVINO's, ``KIND:MODEL``
another export of the model: how far a weight format's answers stay with another's), for the
kinds ``genai`` and ``native``. Each of the 20 chat prompts is answered greedily with EOS
ignored; per row: how many answers are identical to the reference's, and how many tokens
pass before the first difference (median and mean). Near-ties between the two most likely
tokens decide where answers part, so the numbers say how close two configurations' logits
are, which "identical on five prompts" alone does not.

Where answers part at once (INT4 weights of a 135M model do), ``--text-tokens N`` scores
what each row would have said at every position of N tokens of this repository's docs
(teacher forcing, one forward pass of the IR with the row's properties): perplexity, how
often its most likely next token is the reference's, and the mean KL divergence from the
reference's distribution (llama.cpp's ``llama-perplexity --kl-divergence`` measures).
A row ``llama.cpp:FILE.gguf`` scores llama.cpp itself on the same token ids (llama-cpp-python,
in the bench's peers interpreter): where its quants stand against vinolm's weight formats of
about the same size, measured from the same FP16 model. Such rows give no answers to compare.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from vinolm.bench.interleave import parse_row
from vinolm.bench.report import run_tool
from vinolm.errors import InvalidRequest
from vinolm.export import WEIGHT_FORMATS
from vinolm.kernels import add_to_cores, extensions_for

#: Rows of this kind score a GGUF with llama.cpp (``--text-tokens`` only).
LLAMA_ROW = "llama.cpp:"
#: ``--text-tokens`` scores the start of these docs, as every KL number in docs/benchmarks.md did.
DOCS = Path(__file__).resolve().parents[3] / "docs"
PROMPTS = (
    "What is the capital of France?", "Write a short story about a robot who learns to paint.",
    "Explain how a transistor works.", "写一首关于月亮的短诗。", "Give me a Python function that reverses a string.",
    "Name three planets.", "Why is the sky blue?", "Translate 'good morning' into French.", "What is 12 times 7?",
    "Describe a cat in one sentence.", "List the days of the week.", "How do birds fly?", "What does a compiler do?",
    "Tell me a joke about computers.", "What is photosynthesis?", "Suggest a name for a dog.",
    "Summarize the plot of Cinderella.", "What is the boiling point of water?", "Give two tips for better sleep.",
    "What is an API?",
)  # fmt: skip


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def answers(engine: Any, new_tokens: int) -> list[list[int]]:
    from vinolm.types import GenerationParams, Message, Request

    params = GenerationParams(max_new_tokens=new_tokens, temperature=0.0, ignore_eos=True)
    return [engine.complete(Request(messages=[Message("user", p)], params=params)).token_ids[0] for p in PROMPTS]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from vinolm.engines import load_engine
    from vinolm.engines.base import EngineOptions
    from vinolm.models import prepare

    model = prepare(args.model, args.weight_format, progress=lambda _: None)
    results: list[list[list[int]] | None] = []
    for spec in args.row:  # a row given twice is loaded twice: that measures determinism
        if spec.startswith(LLAMA_ROW):
            results.append(None)
            continue
        row = parse_row(spec)
        folder = prepare(row.model, progress=lambda _: None) if row.model else model
        options = EngineOptions(ov_config=row.properties or {}, vinolm_defaults=row.properties is None)
        with load_engine(row.kind, folder, options) as engine:
            results.append(answers(engine, args.new_tokens))
    rows: list[dict[str, Any]] = []
    for spec, ids in zip(args.row, results, strict=True):
        if ids is None:  # a llama.cpp row (never the reference: _problem)
            rows.append({"row": spec, "identical": None})
            continue
        lengths = [common_prefix(a, b) for a, b in zip(ids, results[0], strict=True)]
        rows.append({"row": spec, "identical": sum(n == args.new_tokens for n in lengths), "prompts": len(lengths),
                     "median_tokens_equal": statistics.median(lengths),
                     "mean_tokens_equal": round(statistics.mean(lengths), 1), "tokens_equal": lengths})  # fmt: skip
    if args.text_tokens:
        for row, scores in zip(rows, text_scores(args.row, model, args.text_tokens), strict=True):
            row.update(scores)
    return {"model": str(model.path), "new_tokens": args.new_tokens, "reference": args.row[0],
            "text_tokens": args.text_tokens, "rows": rows}


def text_scores(specs: list[str], model: Any, tokens: int) -> list[dict[str, float]]:
    """Perplexity, top-1 agreement and KL divergence from the first row, per row."""
    import openvino as ov

    from vinolm.engines.native_tokenizer import TokenizerIR
    from vinolm.engines.ovconfig import compile_properties
    from vinolm.models import prepare

    core = ov.Core()
    text = "\n".join(p.read_text(encoding="utf-8") for p in sorted(DOCS.glob("*.md")))
    ids = np.array([TokenizerIR(core, model.path).encode(text)[:tokens]], dtype=np.int64)
    reference: Any = None
    scores = []
    n = ids.shape[1]
    for spec in specs:
        if spec.startswith(LLAMA_ROW):
            logits = llama_logits(spec.removeprefix(LLAMA_ROW), ids[0])[:-1].astype(np.float64)
        else:
            row = parse_row(spec)
            folder = prepare(row.model, progress=lambda _: None) if row.model else model
            props = compile_properties("CPU", row.properties or {}, None, row.properties is None, folder.weights)
            add_to_cores([core], extensions_for(folder.info))
            request = core.compile_model(folder.path / "openvino_model.xml", "CPU", props).create_infer_request()
            request.infer({"input_ids": ids, "attention_mask": np.ones_like(ids), "position_ids": np.arange(n)[None],
                           "beam_idx": np.zeros(1, dtype=np.int32)})
            logits = request.get_tensor("logits").data[0, :-1].astype(np.float64)
        logp = logits - _logsumexp(logits)
        if reference is None:
            reference = logp
        scores.append({
            "perplexity": round(float(np.exp(-logp[np.arange(n - 1), ids[0, 1:]].mean())), 3),
            "top1_same": round(float((logp.argmax(-1) == reference.argmax(-1)).mean()), 4),
            "kl_divergence": round(float((np.exp(reference) * (reference - logp)).sum(-1).mean()), 5),
        })  # fmt: skip
    return scores


def llama_logits(gguf: str, ids: np.ndarray) -> np.ndarray:
    """llama.cpp's logits at every position of ``ids``, from the peers' interpreter (which has
    llama-cpp-python; vinolm's need not)."""
    from vinolm.bench.runner import peers_python, subprocess_env

    with tempfile.TemporaryDirectory(prefix="vinolm-agreement-") as tmp:
        np.save(f"{tmp}/ids.npy", ids)
        cmd = [peers_python(), "-m", "vinolm.bench.peers.llamacpp", "--model", gguf, "--score", f"{tmp}/ids.npy",
               "--logits-out", f"{tmp}/logits.npy"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), check=False)
        line = next((json.loads(x) for x in reversed(proc.stdout.splitlines()) if x.startswith("{")), {})
        if "logits" not in line:
            why = line.get("error") or line.get("skipped") or (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise InvalidRequest(f"--row {LLAMA_ROW}{gguf}: {why}")
        return np.load(f"{tmp}/logits.npy")


def _logsumexp(x: np.ndarray) -> np.ndarray:
    peak = x.max(-1, keepdims=True)
    return peak + np.log(np.exp(x - peak).sum(-1, keepdims=True))


def markdown(result: dict[str, Any]) -> str:
    n = result["new_tokens"]
    head = f"| row (reference: `{result['reference']}`) | identical answers ({n} tokens) "
    scored = bool(result.get("text_tokens"))
    text = f" perplexity ({result.get('text_tokens')} tokens) | top-1 as the reference | KL divergence |"
    lines = [head + "| tokens before the first difference, median | mean |" + (text if scored else ""),
             "|---|---:|---:|---:|" + ("---:|---:|---:|" if scored else "")]
    for r in result["rows"]:
        if r["identical"] is None:  # a llama.cpp row: scored on the text only
            line = f"| `{r['row']}` | – | – | – |"
        else:
            line = (f"| `{r['row']}` | {r['identical']}/{r['prompts']} | {r['median_tokens_equal']:g} "
                    f"| {r['mean_tokens_equal']} |")
        if scored:
            line += f" {r['perplexity']:.2f} | {r['top1_same']:.1%} | {r['kl_divergence']:.4f} |"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vinolm.bench.agreement", description=__doc__.splitlines()[0])
    p.add_argument("--row", action="append", required=True, metavar="KIND[:MODEL][@K=V,...] | llama.cpp:FILE.gguf")
    p.add_argument("--model", default=None)
    p.add_argument("--weight-format", choices=WEIGHT_FORMATS, default="int8")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--text-tokens", type=int, default=0,
                   help="also score this many tokens of the docs under teacher forcing (0: off)")
    return run_tool(p, argv, _problem, measure, markdown)


def _problem(args: argparse.Namespace) -> str | None:
    if len(args.row) < 2 or args.new_tokens < 1:
        return "give at least two --row (the first is the reference) and --new-tokens >= 1"
    if not 0 <= args.text_tokens <= 4096:
        return "--text-tokens must be between 0 (off) and 4096"
    if args.row[0].startswith(LLAMA_ROW):
        return "the first --row is the reference: make it a vinolm row (genai or native)"
    for spec in args.row:
        if spec.startswith(LLAMA_ROW):
            if not args.text_tokens:
                return f"--row {spec!r} is scored on text only: add --text-tokens N"
            if not Path(spec.removeprefix(LLAMA_ROW)).is_file():
                return f"--row {spec!r}: no such GGUF file"
            continue
        try:
            kind = parse_row(spec).kind
        except InvalidRequest as exc:
            return exc.message
        if kind not in ("genai", "native"):
            return f"--row {spec!r}: agreement compares the genai and native engines (and {LLAMA_ROW}FILE.gguf)"
    return None


if __name__ == "__main__":
    raise SystemExit(main())
