"""Time to first token per turn over a long chat: vinolm's cache reuse versus re-encoding.

The tutorials re-encode the whole history on every turn, so their time to first token
grows with the conversation; vinolm keeps the KV cache of the history (genai prefix
caching, the native engine's prefix matching), so each turn should cost about the same.
This runs one conversation with long, deterministic user turns through every variant,
interleaved turn by turn so machine noise hits them alike, and prints the TTFT per turn.

    python -m vinolm.bench.chat_turns [--model M] [--turns 10] [--turn-tokens 150]
        [--new-tokens 64] [--repeats 1] [--engine genai|native] [--ov-config KEY=VALUE ...] [--json]

The re-encoding variant is genai's ``LLMPipeline`` on the stateful SDPA model, which
starts from an empty KV cache on every call like the tutorials' ``model.generate``. (Its
default paged-attention backend keeps a prefix cache of its own, so it would not show the
tutorials' cost.) It is given the reference variant's exact history each turn (same
prompts, same lengths), and its answer is cut after the first piece since nobody reads it.
With ``--repeats`` the conversation runs again with other filler text and each cell is the
median, which tames a busy machine. ``--ov-config`` compiles the cache-reusing engines with
those OpenVINO properties over vinolm's defaults (what a turn's attention over the history
costs in another arithmetic or KV cache precision); the re-encoding variant keeps its own.

    python -m vinolm.bench.chat_turns --url URL [--conversations 4] [--turns 5] ...

With ``--url`` the turns go to a running server instead (streamed ``/v1/chat/completions``,
TTFT as the client sees it): ``--conversations`` chats at once, first all with an
``x-session-id`` each (what ``vinolm serve --replicas`` keeps on one replica, its prefix
cache holding the history), then all without (Ray's two choices per request), the order
swapped on every repeat. Each conversation has text of its own, marked with a nonce of the
run, so no conversation, variant or earlier run shares a cached prefix with another; each
cell is the median over conversations and repeats. The report says how often a follow-up
turn went to the replica of the turn before (``x-vinolm-replica``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from typing import Any

import httpx

from vinolm.bench.report import one_line_errors
from vinolm.chat.session import Chat, Response
from vinolm.client.common import SESSION_HEADER, http_base
from vinolm.deploy.ray_serve import REPLICA_HEADER
from vinolm.engines import load_engine
from vinolm.engines.base import Engine, EngineOptions
from vinolm.engines.ovconfig import parse_ov_config
from vinolm.errors import EngineError, InvalidRequest
from vinolm.models import PreparedModel, prepare
from vinolm.types import GenerationParams, Request

REENCODE = "re-encode"
WITH_SESSION = "x-session-id (affinity)"
WITHOUT_SESSION = "no session (two choices)"
REENCODE_CONFIG = {"ATTENTION_BACKEND": "SDPA"}
TARGET_RATIO = 1.5
_SUBJECTS = ["the red kettle", "a quiet harbour", "the old library", "seven lanterns", "the mountain road",
             "a copper bell", "the night train", "three blue boats", "the orchard wall", "a paper map"]
_VERBS = ["rests beside", "was painted near", "leans against", "was found under", "glows above"]
_PLACES = ["the market", "the river bend", "the north gate", "a stone bridge", "the village square",
           "the lighthouse", "a wooden pier"]


@dataclass
class Variant:
    """One way of running the chat: an engine, its conversation, and its TTFT per turn."""

    label: str
    engine: Engine
    chat: Chat
    reuses_cache: bool


@dataclass
class Row:
    turn: int
    prompt_tokens: int
    ttft: dict[str, float]


@dataclass
class Report:
    model: str
    turn_tokens: int
    new_tokens: int
    repeats: int
    rows: list[Row]
    #: OpenVINO properties over vinolm's defaults for the cache-reusing engines
    ov_config: dict[str, Any] = field(default_factory=dict)
    url: str | None = None
    conversations: int = 1
    #: per variant, where its turns went (server runs)
    placement: dict[str, str] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        return list(self.rows[0].ttft) if self.rows else []

    def ratios(self) -> dict[str, float]:
        """Last-turn TTFT over first-turn TTFT per variant: flat history cost means ~1."""
        first, last = self.rows[0].ttft, self.rows[-1].ttft
        return {label: last[label] / first[label] if first[label] else 0.0 for label in self.labels}

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "ratios": self.ratios(), "target_ratio": TARGET_RATIO}


def filler(turn: int, tokens: int, tokenize: Callable[[str], list[int]]) -> str:
    """A deterministic user message of at least ``tokens`` tokens, different for every turn.

    Distinct sentences per turn keep one turn's text from accidentally matching cached
    blocks of another, so only the real history can be reused.
    """
    sentences = [f"Note {turn}."]
    index = 0
    while len(tokenize(" ".join(sentences))) < tokens:
        step = turn * 31 + index
        sentences.append(
            f"{_SUBJECTS[step % len(_SUBJECTS)].capitalize()} {_VERBS[step % len(_VERBS)]} "
            f"{_PLACES[step % len(_PLACES)]}, item {turn}-{index}."
        )
        index += 1
    sentences.append("Reply with a short summary.")
    return " ".join(sentences)


def time_to_first_piece(response: Response, drain: bool) -> float:
    """Seconds until the first text piece, as the user sees it; then read the rest or stop."""
    started = time.perf_counter()
    first = 0.0
    for _ in response:
        if not first:
            first = time.perf_counter() - started
            if not drain:
                break
    return first


def run_turn(variants: Sequence[Variant], turn: int, text: str) -> Row:
    """Send ``text`` to every variant, the reference first; its prompt length is the row's."""
    reference = variants[0]
    history = list(reference.chat.history)
    row = Row(turn, 0, {})
    for variant in variants:
        if not variant.reuses_cache:
            variant.chat.history = list(history)
        response = variant.chat.send(text)
        row.ttft[variant.label] = time_to_first_piece(response, drain=variant.reuses_cache)
        if not row.ttft[variant.label]:
            raise EngineError(f"{variant.label} answered turn {turn} with no text, so it has no time to first "
                              "token (do its properties break the model?)")
        if variant is reference:
            row.prompt_tokens = response.metrics.input_tokens
    return row


def run_conversation(variants: Sequence[Variant], turns: int, turn_tokens: int, seed: int) -> list[Row]:
    """One fresh conversation through every variant; ``seed`` picks the filler text."""
    tokenize = variants[0].engine.tokenize
    for variant in variants:
        variant.chat.reset()
    texts = [filler(seed + turn, turn_tokens, tokenize) for turn in range(1, turns + 1)]
    return [run_turn(variants, turn, text) for turn, text in enumerate(texts, 1)]


def median_rows(runs: Sequence[list[Row]]) -> list[Row]:
    """Per turn and variant, the median over the repeated conversations."""
    rows = []
    for same_turn in zip(*runs):
        labels = same_turn[0].ttft
        rows.append(Row(
            same_turn[0].turn,
            int(statistics.median(row.prompt_tokens for row in same_turn)),
            {label: statistics.median(row.ttft[label] for row in same_turn) for label in labels},
        ))
    return rows


def warm_up(engine: Engine) -> None:
    """Compile and allocate before timing; a prompt no chat turn starts with."""
    engine.complete(Request(prompt="Warm-up: count to five.", params=GenerationParams(max_new_tokens=4)))


def native_available() -> bool:
    return importlib.util.find_spec("vinolm.engines.native") is not None


def load_variants(model: PreparedModel, engines: Sequence[str], params: GenerationParams,
                  ov_config: dict[str, Any]) -> list[Variant]:
    """The cache-reusing variants first (the first is the reference), re-encoding last."""
    variants = []
    for name in engines:
        options = EngineOptions(batching=name == "genai", max_concurrency=1, ov_config=dict(ov_config))
        engine = load_engine(name, model, options)
        label = "genai prefix cache" if name == "genai" else name
        variants.append(Variant(label, engine, Chat(engine, params=params), reuses_cache=True))
    reencode = load_engine("genai", model, EngineOptions(batching=False, ov_config=dict(REENCODE_CONFIG)))
    variants.append(Variant(REENCODE, reencode, Chat(reencode, params=params), reuses_cache=False))
    for variant in variants:
        warm_up(variant.engine)
    return variants


def run(
    model_ref: str | None, engines: Sequence[str], turns: int, turn_tokens: int, new_tokens: int,
    repeats: int = 1, ov_config: dict[str, Any] | None = None,
) -> Report:
    model = prepare(model_ref, None, progress=lambda message: print(f"vinolm: {message}", file=sys.stderr))
    variants = load_variants(model, engines, GenerationParams(max_new_tokens=new_tokens), ov_config or {})
    try:
        runs = [run_conversation(variants, turns, turn_tokens, seed=1000 * r) for r in range(repeats)]
        return Report(model.name, turn_tokens, new_tokens, repeats, median_rows(runs), ov_config=ov_config or {})
    finally:
        for variant in variants:
            variant.engine.close()


@dataclass
class ServedTurn:
    """One turn through a server: its TTFT, its prompt's length, and who answered."""

    ttft: float
    prompt_tokens: int
    replica: str


def stream_turn(http: httpx.Client, model: str, messages: list[dict[str, str]],
                new_tokens: int) -> tuple[ServedTurn, str]:
    """One streamed chat completion; the turn's measurements and the answer's text."""
    body = {"model": model, "messages": messages, "max_tokens": new_tokens, "temperature": 0.0, "stream": True,
            "stream_options": {"include_usage": True}}
    started, ttft, reply, prompt_tokens = time.perf_counter(), 0.0, "", 0
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            raise EngineError(f"{base_of(http)} answered HTTP {response.status_code}: {response.read()[:300]!r}")
        replica = response.headers.get(REPLICA_HEADER, "")
        for line in response.iter_lines():
            if not line.startswith("data:") or line.endswith("[DONE]"):
                continue
            event = json.loads(line.removeprefix("data:"))
            text = "".join((choice.get("delta") or {}).get("content") or "" for choice in event.get("choices", []))
            if text and not ttft:
                ttft = time.perf_counter() - started
            reply += text
            prompt_tokens = (event.get("usage") or {}).get("prompt_tokens", prompt_tokens)
    if not ttft:
        raise EngineError(f"{base_of(http)} answered a turn with no text, so it has no time to first token")
    return ServedTurn(ttft, prompt_tokens, replica), reply


def base_of(http: httpx.Client) -> str:
    return str(http.base_url).rstrip("/")


def served_conversation(base: str, model: str, texts: Sequence[str], session: str | None,
                        new_tokens: int) -> list[ServedTurn]:
    """One chat through the server, the whole history sent each turn as a client does."""
    headers = {SESSION_HEADER: session} if session else {}
    messages: list[dict[str, str]] = []
    turns = []
    with httpx.Client(base_url=base, headers=headers, timeout=httpx.Timeout(600.0, connect=10.0)) as http:
        for text in texts:
            messages.append({"role": "user", "content": text})
            turn, reply = stream_turn(http, model, messages, new_tokens)
            messages.append({"role": "assistant", "content": reply})
            turns.append(turn)
    return turns


def concurrent_chats(base: str, model: str, texts: Sequence[Sequence[str]], sessions: Sequence[str | None],
                     new_tokens: int) -> list[list[ServedTurn]]:
    """The chats at once, one thread each, as that many users."""
    with ThreadPoolExecutor(len(texts)) as pool:
        return list(pool.map(lambda text, session: served_conversation(base, model, text, session, new_tokens),
                             texts, sessions))


def stayed(chats: Sequence[list[ServedTurn]]) -> str:
    """How many follow-up turns the replica of the turn before answered, and the first
    turns' spread over replicas."""
    follow_ups = [(before.replica, turn.replica) for chat in chats for before, turn in pairwise(chat)]
    spread = Counter(chat[0].replica for chat in chats if chat)
    return (f"{sum(a == b for a, b in follow_ups)}/{len(follow_ups)} follow-up turns on the previous turn's "
            f"replica; conversations per replica {sorted(spread.values(), reverse=True)}")


def run_server(url: str, model_ref: str | None, turns: int, turn_tokens: int, new_tokens: int, repeats: int,
               conversations: int) -> Report:
    """The conversations through a running server, with and without a session each."""
    from vinolm.bench.server import served_name

    model = prepare(model_ref, None, progress=lambda message: print(f"vinolm: {message}", file=sys.stderr))
    tokenize = server_tokenizer(model)
    base, nonce = url.rstrip("/"), uuid.uuid4().hex[:8]
    served = served_name(base)
    # every replica compiles and allocates before timing
    concurrent_chats(base, served, [["Warm-up: count to five."]] * 2 * conversations, [None] * 2 * conversations, 4)
    chats: dict[str, list[list[ServedTurn]]] = {WITH_SESSION: [], WITHOUT_SESSION: []}
    for repeat in range(repeats):
        for label in [WITH_SESSION, WITHOUT_SESSION][:: 1 if repeat % 2 == 0 else -1]:
            first = (2 * repeat + (label == WITHOUT_SESSION)) * conversations  # a chat's number, unique in the run
            texts = [[f"[{nonce}] {filler(100 * (first + c) + turn, turn_tokens, tokenize)}"
                      for turn in range(1, turns + 1)] for c in range(conversations)]
            sessions = [f"{nonce}-{first + c}" if label == WITH_SESSION else None for c in range(conversations)]
            chats[label] += concurrent_chats(base, served, texts, sessions, new_tokens)
    runs = [[Row(number, a.prompt_tokens, {WITH_SESSION: a.ttft, WITHOUT_SESSION: b.ttft})
             for number, (a, b) in enumerate(zip(with_chat, without_chat), 1)]
            for with_chat, without_chat in zip(chats[WITH_SESSION], chats[WITHOUT_SESSION])]
    return Report(model.name, turn_tokens, new_tokens, repeats, median_rows(runs), url=base,
                  conversations=conversations, placement={label: stayed(chats[label]) for label in chats})


def server_tokenizer(model: PreparedModel) -> Callable[[str], list[int]]:
    """The model's own tokenizer without loading the model (the server has it)."""
    import openvino as ov
    import openvino_tokenizers  # noqa: F401  (registers the tokenizer operations)

    from vinolm.engines.native_tokenizer import TokenizerIR

    return TokenizerIR(ov.Core(), model.path).encode


def markdown(report: Report) -> str:
    """The table for docs/benchmarks.md, plus the last/first ratios against the target."""
    labels = report.labels
    lines = [
        "| turn | prompt tokens | " + " | ".join(f"TTFT {label} (ms)" for label in labels) + " |",
        "|---:|---:|" + "---:|" * len(labels),
    ]
    for row in report.rows:
        cells = " | ".join(f"{row.ttft[label] * 1000:.0f}" for label in labels)
        lines.append(f"| {row.turn} | {row.prompt_tokens} | {cells} |")
    last = report.rows[-1].turn if report.rows else 0
    lines.append("")
    if report.ov_config:
        config = ", ".join(f"{k}={v}" for k, v in report.ov_config.items())
        lines.append(f"- the cache-reusing engines compiled with {config} over vinolm's defaults")
    for label, ratio in report.ratios().items():
        verdict = "meets" if ratio <= TARGET_RATIO else "misses"
        target = "" if label == REENCODE else f" ({verdict} the {TARGET_RATIO}x target)"
        lines.append(f"- turn {last} / turn 1 TTFT, {label}: {ratio:.2f}x{target}")
    lines += [f"- {label}: {where}" for label, where in report.placement.items()]
    return "\n".join(lines)


PROG = "python -m vinolm.bench.chat_turns"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--model", default=None, help="model reference (default: smollm2-135m)")
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--turn-tokens", type=int, default=150, help="length of each user turn")
    parser.add_argument("--new-tokens", type=int, default=64, help="max_new_tokens of each answer")
    parser.add_argument("--repeats", type=int, default=1, help="conversations to run; cells are medians")
    parser.add_argument("--engine", choices=["genai", "native"], action="append", default=None,
                        help="cache-reusing engine(s) to time, repeatable "
                             "(default: genai, and native if present)")
    parser.add_argument("--url", default=None,
                        help="a running server (e.g. vinolm serve --replicas 2): chats with and without "
                             "x-session-id instead of the in-process engines")
    parser.add_argument("--conversations", type=int, default=4, help="with --url: chats at once")
    parser.add_argument("--ov-config", action="append", default=[], metavar="KEY=VALUE",
                        help="OpenVINO properties over vinolm's defaults for the cache-reusing engines")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the Markdown table")
    args = parser.parse_args(argv)
    if min(args.turns, args.turn_tokens, args.new_tokens, args.repeats, args.conversations) < 1:
        parser.error("--turns, --turn-tokens, --new-tokens, --repeats and --conversations must be positive")
    if args.url and (args.engine or args.ov_config):
        parser.error("--engine and --ov-config set up in-process engines; with --url the server's engine answers")
    try:
        args.ov_config = parse_ov_config(args.ov_config)
        args.url = http_base(args.url) if args.url else None
    except InvalidRequest as exc:
        parser.error(str(exc))
    args.engine = list(dict.fromkeys(args.engine or ["genai", *(["native"] if native_available() else [])]))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with one_line_errors(PROG):
        if args.url:
            try:
                report = run_server(args.url, args.model, args.turns, args.turn_tokens, args.new_tokens,
                                    args.repeats, args.conversations)
            except httpx.TransportError as exc:
                raise EngineError(f"cannot reach {args.url}: {exc}") from exc
        else:
            report = run(args.model, args.engine, args.turns, args.turn_tokens, args.new_tokens, args.repeats,
                         args.ov_config)
    print(json.dumps(report.to_dict(), indent=2) if args.json else markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
