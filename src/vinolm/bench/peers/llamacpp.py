"""llama.cpp peer: prefill/decode speed of llama-cpp-python on a GGUF model.

Run it in its own process, with an interpreter that has ``llama_cpp`` (the project keeps
one in ``.venv-peers``)::

    python -m vinolm.bench.peers.llamacpp --model PATH.gguf \\
        --prompt-tokens 990 --new-tokens 128 --runs 5 --threads 2

It prints ONE JSON line on stdout and nothing else (llama.cpp logs go to stderr).

What one run measures:

* the prompt is exactly ``--prompt-tokens`` tokens: a long English filler text,
  tokenized (with BOS if the model adds one) and cut to that length, behind a few
  words of its own (``lead``) so that no run's prompt is one an earlier run cached;
* ``ttft_s``: from the start of prefill until the first generated token is known
  (prefill of the whole prompt + picking the token: what a streaming client waits);
* ``prefill_tps`` = prompt tokens / ``ttft_s``;
* decoding goes on for exactly ``--new-tokens`` tokens: greedy (argmax) with every
  end-of-generation token masked, so it never stops early; the count is checked;
* ``tpot_s`` = (end - first token) / (new tokens - 1), ``decode_tps`` = 1 / ``tpot_s``
  (the usual definition: the first token's cost is in TTFT);
* ``loadavg_before``/``loadavg_after``: the machine's load average, since other work
  on the same cores skews every number (OpenMP threads that lose their core stall:
  on a busy 2-core machine ``OMP_WAIT_POLICY=PASSIVE`` decodes several times faster
  than the default spinning, which is recorded as ``omp_wait_policy``);
* ``load_s``: constructing ``llama_cpp.Llama`` (mmap + context), ``peak_rss_mb``: the
  process's peak resident set (``getrusage``) at the end.

The loop is the low-level one (``Llama.eval`` + the logits of the last position), the
same work ``create_completion`` does minus its per-token sampler-chain rebuild and
detokenization, so it measures the engine rather than Python glue.

With ``--score IDS.npy --logits-out OUT.npy`` it times nothing: it runs those token ids
through the model in one pass (teacher forcing) and saves every position's logits, which
``vinolm.bench.agreement --text-tokens`` scores against vinolm's rows (how far a llama.cpp
quant's next-token distribution is from the FP16 model's, as ``llama-perplexity
--kl-divergence`` measures). Its JSON line then names the file and the number of tokens.

If ``llama_cpp`` is not importable it prints a ``skipped`` line and exits 0.

Building the peer (llama-cpp-python 0.3.36, 5-20 minutes of compiling on 2 cores):
``GGML_NATIVE`` compiles ggml for the CPU it builds on (``-march=native``: AVX-512, VNNI,
BF16 where the CPU has them), which ties the wheel to that kind of CPU. The AMX
instructions stay off: on Intel CPUs with AMX, ggml's AMX kernel crashes (an upstream
bug), and GCC's explicit ``-mno-amx-*`` wins over what ``-march=native`` implies. A
hand-picked ISA list is a trap: ``-DGGML_AVX_VNNI=ON`` builds a wheel that dies with
"Illegal instruction" on AMD EPYC (AVX512-VNNI but no AVX-VNNI). ``make peers`` builds it
into ``.venv-peers`` and records its CMake flags in ``.venv-peers/vinolm-llamacpp-build.txt``.

The runner starts it with ``PYTHONPATH`` pointing at vinolm's ``src`` (this module needs
only the standard library and ``llama_cpp``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

PEER = "llama.cpp"
SKIP_REASON = (
    "llama-cpp-python is not installed (pip install 'vinolm[bench]' or build it into "
    ".venv-peers; see src/vinolm/bench/peers/llamacpp.py)"
)
# Where the CMAKE_ARGS of the installed build are recorded (one line, written when the
# wheel is built/installed), unless --build or $VINOLM_LLAMACPP_BUILD says otherwise.
BUILD_FILE_NAME = "vinolm-llamacpp-build.txt"
BUILD_ENV = "VINOLM_LLAMACPP_BUILD"

FILLER = (
    "The history of the written word is, in many ways, the history of people trying to "
    "remember things they could not keep in their heads. Merchants in ancient cities "
    "pressed marks into wet clay to count sheep, jars of oil and measures of grain, and "
    "those small tallies slowly grew into signs for sounds, names and whole sentences. "
    "Scribes spent years learning hundreds of symbols, and the skill was rare enough that "
    "a person who could read and write was often a priest, an official or a trusted "
    "servant of a king. When alphabets appeared, with a few dozen letters instead of "
    "hundreds of signs, reading became something a sailor or a shopkeeper could learn in "
    "a season. Letters travelled along trade routes together with copper, cloth and "
    "spices, and each people that borrowed them bent the shapes to suit its own speech.\n\n"
    "Books changed shape as often as alphabets did. Long rolls of papyrus gave way to "
    "bound pages of parchment, which could be opened at any place, carried in a bag and "
    "written on both sides. Monks copied texts by hand through long winters, adding "
    "notes in the margins, small drawings of birds and the occasional complaint about "
    "cold fingers or poor light. A single large book could take a year to finish and "
    "cost as much as a farm. Libraries were built around a few hundred volumes, chained "
    "to their desks so that nobody would walk away with them.\n\n"
    "The printing press did not invent the book, but it made books cheap, and cheap "
    "books changed everything around them. Within a few decades printers in dozens of "
    "towns were producing calendars, grammars, sermons, maps, almanacs and pamphlets "
    "that argued about religion, medicine and the price of bread. Spelling settled down "
    "because typesetters needed rules, and scholars in distant countries could finally "
    "be sure they were reading the same words on the same page. Newspapers followed, "
    "first as single sheets of shipping news and later as daily papers that told a whole "
    "city what had happened the day before.\n\n"
    "Today most text is never printed at all. It lives as numbers in the memory of "
    "machines, copied millions of times a second between computers that sit in cold "
    "rooms far from the people who read it. Yet the old habits survive: we still speak "
    "of pages, chapters, margins and bookmarks, we still underline the passages that "
    "matter to us, and we still find it easier to think when the words are laid out in "
    "front of us in a calm and orderly line, one after another, the way clay tablets "
    "were once laid out to dry in the sun beside a busy market square.\n\n"
)


#: Every timed prompt starts with its own words (``lead``): vinolm's engines and genai keep a
#: prefix cache across requests and llama.cpp's server keeps its slot's KV cache, so a prompt
#: seen before would be "prefilled" from the cache and its TTFT would measure nothing.
PREFIX_WORDS = (
    "Alpha",
    "Bravo",
    "Charlie",
    "Delta",
    "Echo",
    "Foxtrot",
    "Golf",
    "Hotel",
    "India",
    "Juliet",
    "Kilo",
    "Lima",
    "Mike",
    "November",
    "Oscar",
    "Papa",
    "Quebec",
    "Romeo",
    "Sierra",
    "Tango",
    "Uniform",
    "Victor",
    "Whiskey",
    "Xray",
    "Yankee",
    "Zulu",
)


#: Where ``make peers`` builds llama.cpp's own programs (llama-server, llama-bench,
#: llama-quantize) from the source vendored in the llama-cpp-python sdist.
LLAMA_BIN_ENV = "VINOLM_LLAMA_CPP_BIN"
LLAMA_BIN = Path(__file__).resolve().parents[4] / ".venv-peers" / "llama.cpp" / "bin"


def llama_tool(name: str) -> str:
    """The path of one of llama.cpp's programs; FileNotFoundError says how to build it."""
    folder = Path(os.environ.get(LLAMA_BIN_ENV) or LLAMA_BIN)
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: `make peers` builds it (or set ${LLAMA_BIN_ENV})")
    return str(path)


def lead(variant: int) -> str:
    """The first words of prompt number ``variant``, different from every other's."""
    return f"{PREFIX_WORDS[variant % len(PREFIX_WORDS)]} {variant}: "


def skip_line() -> dict[str, Any]:
    return {"peer": PEER, "skipped": SKIP_REASON}


def import_llama_cpp():  # -> module | None
    try:
        import llama_cpp
    except (ImportError, OSError):  # not installed, or a shared library that fails to load
        return None
    return llama_cpp


def build_description(explicit: str | None = None) -> str:
    """The CMAKE_ARGS the installed llama-cpp-python was built with, as far as known."""
    if explicit:
        return explicit
    env = os.environ.get(BUILD_ENV)
    if env:
        return env
    path = Path(sys.prefix) / BUILD_FILE_NAME
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return "unknown"
    return text or "unknown"


def system_info(llama_cpp) -> str:
    info = llama_cpp.llama_print_system_info()
    if isinstance(info, bytes):
        info = info.decode("utf-8", "replace")
    return info.strip()


def loadavg() -> list[float] | None:
    """1/5/15-minute load average: a busy machine skews every number, so it is recorded."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def peak_rss_mb(pid: int | None = None) -> float | None:
    """Peak resident memory of a process (None: this one), from its ``VmHWM``.

    Not ``getrusage``'s ``ru_maxrss``: after ``exec`` that still holds the peak of the process
    that spawned the job, so every job of a bench that had just exported a model in-process
    reported the export's 1.5 GB. ``ru_maxrss`` only where ``/proc`` is missing (macOS).
    """
    try:
        for line in Path(f"/proc/{pid or 'self'}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    except (OSError, ValueError, IndexError):
        pass
    if pid is None:  # ru_maxrss is in KiB on Linux, in bytes on macOS
        unit = 1024.0 * (1024.0 if sys.platform == "darwin" else 1.0)
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / unit, 1)
    return None


def eog_token_ids(llama_cpp, llm) -> list[int]:
    """Every end-of-generation token of the model's vocabulary (EOS, EOT, <|im_end|>, ...)."""
    ids = {int(llm.token_eos())}
    vocab_fn = getattr(llama_cpp, "llama_model_get_vocab", None)
    is_eog = getattr(llama_cpp, "llama_vocab_is_eog", None)
    if vocab_fn is not None and is_eog is not None:
        vocab = vocab_fn(llm.model)
        for tok in range(llm.n_vocab()):
            if is_eog(vocab, tok):
                ids.add(tok)
    return sorted(i for i in ids if 0 <= i < llm.n_vocab())


def filler_tokens(llm, n: int, variant: int = 0) -> list[int]:
    """Exactly ``n`` prompt tokens: ``lead(variant)`` and the filler text repeated,
    tokenized, cut to ``n``."""
    if n < 1:
        raise ValueError("prompt must have at least one token")
    reps = 1
    while True:
        toks = llm.tokenize((lead(variant) + FILLER * reps).encode("utf-8"), add_bos=True, special=False)
        if len(toks) >= n:
            return list(toks[:n])
        reps *= 2


class GreedyDecoder:
    """Prefill + greedy decode with the low-level API; EOG tokens can never be picked."""

    def __init__(self, llama_cpp, llm) -> None:
        import numpy as np  # llama_cpp depends on numpy

        self._np = np
        self._llama_cpp = llama_cpp
        self._llm = llm
        self._n_vocab = llm.n_vocab()
        self._mask = np.zeros(self._n_vocab, dtype=np.float32)
        self._mask[eog_token_ids(llama_cpp, llm)] = -np.inf

    def _next_token(self) -> int:
        ptr = self._llama_cpp.llama_get_logits_ith(self._llm.ctx, -1)
        logits = self._np.ctypeslib.as_array(ptr, shape=(self._n_vocab,))
        return int(self._np.argmax(logits + self._mask))

    def run(self, prompt: list[int], new_tokens: int) -> dict[str, Any]:
        llm = self._llm
        llm.reset()  # n_tokens = 0: the next eval drops the whole KV cache first
        t0 = time.perf_counter()
        llm.eval(prompt)
        tok = self._next_token()
        t_first = time.perf_counter()
        generated = [tok]
        while len(generated) < new_tokens:
            llm.eval([tok])
            tok = self._next_token()
            generated.append(tok)
        t_end = time.perf_counter()
        if len(generated) != new_tokens:  # pragma: no cover - the loop guarantees it
            raise RuntimeError(f"generated {len(generated)} tokens, wanted {new_tokens}")
        ttft = t_first - t0
        run: dict[str, Any] = {
            "ttft_s": round(ttft, 6),
            "prefill_tps": round(len(prompt) / ttft, 2),
            "decode_tps": None,
            "tpot_s": None,
            "new_tokens": len(generated),
        }
        if new_tokens > 1:
            tpot = (t_end - t_first) / (new_tokens - 1)
            run["tpot_s"] = round(tpot, 6)
            run["decode_tps"] = round(1.0 / tpot, 2)
        run["total_s"] = round(t_end - t0, 6)
        return run


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in runs if r.get(key) is not None]
    return round(statistics.median(vals), 6) if vals else None


def context_size(prompt_tokens: int, new_tokens: int) -> int:
    need = prompt_tokens + new_tokens + 16
    return max(512, -(-need // 256) * 256)


def job_arguments(p: argparse.ArgumentParser, warmup_help: str = "untimed runs first") -> None:
    """The sizes ``vinolm bench`` hands every single-stream job, vinolm's worker and each peer
    alike, so that all of them read and check them the same way (``parse_job``)."""
    p.add_argument("--prompt-tokens", type=int, default=990)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1, help=warmup_help)


def parse_job(p: argparse.ArgumentParser, argv: list[str] | None, least_threads: int = 1) -> argparse.Namespace:
    """``p``'s arguments, the job's sizes checked before anything loads: a job with nothing to
    time would load its model and report a row without a number. ``least_threads``: 1 for
    llama.cpp's thread count, 0 where 0 means the library's own default (torch)."""
    args = p.parse_args(argv)
    if min(args.prompt_tokens, args.new_tokens, args.runs) < 1 or args.warmup < 0:
        p.error("--prompt-tokens, --new-tokens and --runs must be >= 1, --warmup >= 0")
    if getattr(args, "threads", least_threads) < least_threads:
        p.error(f"--threads must be >= {least_threads}")
    return args


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m vinolm.bench.peers.llamacpp",
        description="Measure llama-cpp-python prefill/decode speed; prints one JSON line.",
    )
    p.add_argument("--model", required=True, help="path to a .gguf file")
    job_arguments(p)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--batch-size", type=int, default=2048, help="n_batch (logical batch)")
    p.add_argument("--ubatch-size", type=int, default=512, help="n_ubatch (physical batch)")
    p.add_argument("--flash-attn", action="store_true", help="enable flash attention")
    p.add_argument("--build", default=None, help="describe the build (default: recorded)")
    p.add_argument("--score", default=None, metavar="IDS.npy",
                   help="instead of timing: run these token ids in one pass and save the logits")
    p.add_argument("--logits-out", default=None, metavar="OUT.npy", help="where --score writes the logits")
    args = parse_job(p, argv)
    if (args.score is None) != (args.logits_out is None):
        p.error("--score and --logits-out go together")
    if min(args.batch_size, args.ubatch_size) < 1:
        p.error("--batch-size and --ubatch-size must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    llama_cpp = import_llama_cpp()
    if llama_cpp is None:
        print(json.dumps(skip_line()), flush=True)
        return 0
    if not Path(args.model).is_file():
        print(json.dumps({"peer": PEER, "error": f"model not found: {args.model}"}))
        return 2

    if args.score:
        return score(llama_cpp, args)
    load_before = loadavg()
    n_ctx = context_size(args.prompt_tokens, args.new_tokens)
    n_batch = max(512, min(args.batch_size, n_ctx))
    t0 = time.perf_counter()
    try:
        llm = llama_cpp.Llama(
            model_path=args.model,
            n_ctx=n_ctx,
            n_batch=n_batch,
            n_ubatch=min(args.ubatch_size, n_batch),
            n_threads=args.threads,
            n_threads_batch=args.threads,
            flash_attn=args.flash_attn,
            n_gpu_layers=0,
            verbose=False,
        )
    except ValueError as exc:  # llama-cpp-python's "Failed to load model from file"
        print(json.dumps({"peer": PEER, "error": f"llama.cpp cannot load {args.model}: {exc}"}), flush=True)
        return 1
    load_s = time.perf_counter() - t0

    prompts = [filler_tokens(llm, args.prompt_tokens, v) for v in range(args.warmup + args.runs)]
    decoder = GreedyDecoder(llama_cpp, llm)
    for prompt in prompts[: args.warmup]:
        decoder.run(prompt, min(args.new_tokens, 8))
    runs = [decoder.run(prompt, args.new_tokens) for prompt in prompts[args.warmup :]]

    out = {
        "peer": PEER,
        "version": getattr(llama_cpp, "__version__", "unknown"),
        "system_info": system_info(llama_cpp),
        "build": build_description(args.build),
        "model": os.path.abspath(args.model),
        "prompt_tokens": len(prompts[0]),
        "distinct_prompts": True,
        "threads": args.threads,
        "n_ctx": n_ctx,
        "n_batch": n_batch,
        "n_ubatch": min(args.ubatch_size, n_batch),
        "flash_attn": bool(args.flash_attn),
        "warmup": args.warmup,
        "sampling": "greedy argmax, end-of-generation tokens masked",
        "load_s": round(load_s, 4),
        "runs": runs,
        "median": {k: _median(runs, k) for k in ("ttft_s", "prefill_tps", "decode_tps", "tpot_s")},
        "peak_rss_mb": peak_rss_mb(),
        "cpu_count": os.cpu_count(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    }
    print(json.dumps(out), flush=True)
    return 0


def score(llama_cpp, args: argparse.Namespace) -> int:
    """Every position's logits for the ids in ``args.score``, in one batch: the whole text
    is one ubatch, so each position sees the same kernels a prompt would."""
    import numpy as np

    ids = np.load(args.score).astype(np.int64).reshape(-1).tolist()
    try:
        llm = llama_cpp.Llama(model_path=args.model, n_ctx=len(ids) + 8, n_batch=len(ids), n_ubatch=len(ids),
                              logits_all=True, n_threads=args.threads, n_threads_batch=args.threads,
                              flash_attn=args.flash_attn, n_gpu_layers=0, verbose=False)
    except ValueError as exc:
        print(json.dumps({"peer": PEER, "error": f"llama.cpp cannot load {args.model}: {exc}"}), flush=True)
        return 1
    if max(ids) >= llm.n_vocab():
        print(json.dumps({"peer": PEER, "error": f"{args.model} has {llm.n_vocab()} tokens; the ids to score "
                          f"reach {max(ids)}: another tokenizer's"}), flush=True)
        return 1
    llm.eval(ids)
    logits = np.asarray(llm.scores[: len(ids)], dtype=np.float32)
    partial = f"{args.logits_out}.partial.npy"
    np.save(partial, logits)
    os.replace(partial, args.logits_out)
    print(json.dumps({"peer": PEER, "model": os.path.abspath(args.model), "tokens": len(ids),
                      "logits": args.logits_out, "build": build_description(args.build)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
