"""Throughput through a running vinolm server; prints one JSON line (see ``schema``).

    python -m vinolm.bench.server [--url URL] --protocol openai|kserve-rest|grpc \\
        [--model M] --concurrency 1,4,8 --prompt-tokens N --new-tokens M --rounds K [--json-schema [FILE]] \\
        [--task copy|rewrite|story] [--prompt-lookup | --draft-model MODEL]

Without ``--url`` it starts ``vinolm serve`` (continuous batching, as users run it) in a
subprocess on free loopback ports and stops it at the end; with ``--llama-server GGUF`` it
starts llama.cpp's own C++ ``llama-server`` instead, the peer users compare with (Ollama runs
it): ``-np`` parallel slots = the highest level, continuous batching, and the OpenAI
protocol measured the same way. Per level, C requests go out
at once, each a separate client connection like C users (OpenAI: streamed
``/v1/completions``; KServe REST: one ``infer`` each, not streamed; gRPC: one
``ModelStreamInfer`` each), ``--rounds`` times. Reported per round: generated tokens
(the server's own count) / wall time from the first send to the last byte; per request:
TTFT, the first streamed piece (none for KServe REST, which does not stream). Every
request has a prompt of its own (a new lead, then the shared filler text, cut to exactly N
tokens of the model's tokenizer), so the server's prefix cache never serves one; every request
uses greedy decoding with ``ignore_eos``, so all generate exactly M tokens. With
``--json-schema`` each request carries that schema the way users send it (OpenAI:
``response_format`` ``json_schema``; KServe: the ``json_schema`` parameter) instead of
``ignore_eos``; the schema (``default``: ``constrained.DEFAULT_SCHEMA``) must not end within M
tokens, and every answer is checked to start a document of it. With ``--replicas N`` the
started server is ``vinolm serve --replicas N --threads-per-replica T [--ray-cpus C]``, N
replicas on Ray Serve (on a free fixed port: Ray's proxy takes no port 0), whose peak RSS is
not reported (the replicas are Ray's worker processes, not the server's).

``--task`` asks chat work of the model instead (``bench.tasks``: copy or rewrite a passage of
about N tokens, write a story; OpenAI protocol, streamed ``/v1/chat/completions``, greedy):
each request ends at EOS or M tokens, the rate counts what was generated, and each round
records a digest of its answers, so two servers given the same work (each command asks the
same passages in the same order) can be checked to have answered alike. Each passage opens
with its request's number, so none is a prefix of another. ``--prompt-lookup`` starts
``vinolm serve --prompt-lookup``: what speculative decoding does to a server's throughput
when many requests share the CPU; with ``--llama-server`` it starts llama.cpp's analogue,
``--spec-type ngram-simple`` (its n-gram lookup in the tokens so far, llama.cpp's own settings).
``--draft-model`` starts either server with a draft model: ``vinolm serve --draft-model MODEL``,
or ``llama-server -md GGUF`` with llama.cpp's own draft settings, as its users run it.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vinolm.bench.constrained import DEFAULT, SUFFIX, check_prefix, load_schema, short_run
from vinolm.bench.peers.llamacpp import peak_rss_mb
from vinolm.bench.schema import (
    Prompts,
    emit,
    error_line,
    level_record,
    new_prompts,
    parse_levels,
    result_line,
    round_record,
)
from vinolm.bench.tasks import TASKS, task_prompts
from vinolm.client.common import http_base
from vinolm.errors import InvalidRequest
from vinolm.export import WEIGHT_FORMATS

PROTOCOLS = ("openai", "kserve-rest", "grpc")
READY = "vinolm: ready: "
#: (ttft or None, generated tokens, end instant, text) of one request
Outcome = tuple[float | None, int, float, str]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _server_process(cmd: list[str], name: str, env: dict[str, str] | None = None,
                    ) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A server subprocess with its output in a temporary log; stopped (killed if it must be) at the end."""
    with tempfile.NamedTemporaryFile("w+", prefix=f"{name}-", suffix=".log") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            yield proc, Path(log.name)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def local_server(
    model: str, max_concurrency: int, ray_flags: Sequence[str] = (), timeout_s: float = 300.0,
    ov_config: Sequence[str] = (), flags: Sequence[str] = (),
) -> Iterator[tuple[str, str, int]]:
    """``vinolm serve`` (with ``ray_flags``: on Ray Serve; with ``ov_config``: those OpenVINO
    properties; then any other ``flags``) on loopback; yields (HTTP base URL, gRPC address,
    server pid)."""
    grpc_port, port = free_port(), free_port() if ray_flags else 0
    cmd = [sys.executable, "-m", "vinolm.cli", "serve", "--model", model, "--host", "127.0.0.1", "--port", str(port),
           "--grpc-port", str(grpc_port), "--no-ui", "--max-concurrency", str(max_concurrency),
           "--max-queue", "64", "--log-level", "warning", *ray_flags,
           *(arg for pair in ov_config for arg in ("--ov-config", pair)), *flags]  # fmt: skip
    with _server_process(cmd, "vinolm-bench-serve") as (proc, log):
        yield _wait_ready(proc, log, timeout_s), f"127.0.0.1:{grpc_port}", proc.pid


@contextmanager
def llama_server(gguf: str, slots: int, context_per_slot: int, threads: int, speculation: Sequence[str] = (),
                 timeout_s: float = 300.0) -> Iterator[tuple[str, str, int]]:
    """llama.cpp's ``llama-server`` on loopback with ``slots`` parallel slots, each with the
    context one request needs (and its ``speculation`` flags); yields (base URL, "", pid) like
    :func:`local_server`."""
    import httpx

    from vinolm.bench.peers.llamacpp import llama_tool

    port = free_port()
    cmd = [llama_tool("llama-server"), "-m", gguf, "--host", "127.0.0.1", "--port", str(port),
           "-np", str(slots), "-c", str(slots * context_per_slot), "-t", str(threads), "--cont-batching",
           "--no-webui", "-a", Path(gguf).name, *speculation]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    with _server_process(cmd, "llama-server") as (proc, log):
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama-server exited with {proc.returncode}: "
                                   f"{log.read_text(errors='replace')[-1500:]}")
            try:
                if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama-server not ready after {timeout_s:.0f} s")
            time.sleep(0.2)
        yield base, "", proc.pid


def _wait_ready(proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        for line in text.splitlines():
            if line.startswith(READY):
                return line.removeprefix(READY).split()[0]
        if proc.poll() is not None:
            raise RuntimeError(f"vinolm serve exited with {proc.returncode}: {text[-1500:]}")
        time.sleep(0.2)
    raise RuntimeError(f"vinolm serve not ready after {timeout_s:.0f} s")


def served_name(base: str) -> str:
    import httpx

    return str(httpx.get(f"{base}/v1/models", timeout=30).json()["data"][0]["id"])


def generation(protocol: str, schema: dict[str, Any] | None) -> dict[str, Any]:
    """Greedy, exactly the asked tokens: EOS ignored, or the constraint in the protocol's own
    field (its grammar keeps EOS out, and the server refuses ignore_eos with a constraint)."""
    if schema is None:
        return {"temperature": 0.0, "ignore_eos": True}
    if protocol == "openai":
        return {"temperature": 0.0, "response_format": {"type": "json_schema",
                                                        "json_schema": {"name": "bench", "schema": schema}}}
    return {"temperature": 0.0, "json_schema": schema}


async def openai_request(client: Any, model: str, prompt: str, new_tokens: int,
                         schema: dict[str, Any] | None) -> Outcome:  # fmt: skip
    body = {"model": model, "prompt": prompt, "max_tokens": new_tokens, "stream": True,
            "stream_options": {"include_usage": True}, **generation("openai", schema)}  # fmt: skip
    return await _openai_stream(client, "/v1/completions", body, lambda choice: choice.get("text"))


async def chat_request(client: Any, model: str, prompt: str, new_tokens: int,
                       schema: dict[str, Any] | None) -> Outcome:  # fmt: skip
    """A task's user message through streamed ``/v1/chat/completions``, greedy, ending at EOS
    or ``new_tokens`` (no schema: ``parse_args`` refuses one with a task)."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": new_tokens,
            "stream": True, "stream_options": {"include_usage": True}, "temperature": 0.0}  # fmt: skip
    return await _openai_stream(client, "/v1/chat/completions", body,
                                lambda choice: (choice.get("delta") or {}).get("content"))


async def _openai_stream(client: Any, route: str, body: dict[str, Any],
                         piece: Callable[[dict[str, Any]], str | None]) -> Outcome:  # fmt: skip
    """One streamed OpenAI request; TTFT is the first event with text (a chat stream opens
    with the role alone), the token count the server's own usage."""
    start, first, tokens, text = time.perf_counter(), None, 0, []
    async with client.stream("POST", route, json=body) as resp:
        if resp.status_code != 200:
            raise RuntimeError(f"HTTP {resp.status_code}: {(await resp.aread())[:300]!r}")
        async for line in resp.aiter_lines():
            if not line.startswith("data:") or line.endswith("[DONE]"):
                continue
            event = json.loads(line[5:])
            pieces = [piece(choice) or "" for choice in event.get("choices") or []]
            if any(pieces) and first is None:
                first = time.perf_counter() - start
            text += pieces
            if event.get("usage"):
                tokens = int(event["usage"]["completion_tokens"])
    return first, tokens, time.perf_counter(), "".join(text)


async def kserve_rest_request(client: Any, model: str, prompt: str, new_tokens: int,
                              schema: dict[str, Any] | None) -> Outcome:  # fmt: skip
    from vinolm.client.kserve_rest import infer_body

    body = infer_body([prompt], new_tokens)
    body["parameters"].update(generation("kserve-rest", schema), chat=False)
    resp = await client.post(f"/v2/models/{model}/infer", json=body)
    if resp.status_code != 200:
        raise RuntimeError(f"HTTP {resp.status_code}: {resp.text[:300]}")
    outputs = {o["name"]: o["data"] for o in resp.json()["outputs"]}
    return None, int(outputs["token_count"][0]), time.perf_counter(), str(outputs["completion"][0])


async def http_round(protocol: str, base: str, model: str, prompts: list[str], new_tokens: int,
                     schema: dict[str, Any] | None, chat: bool = False) -> list[Outcome]:  # fmt: skip
    import httpx

    one = chat_request if chat else openai_request if protocol == "openai" else kserve_rest_request
    limits = httpx.Limits(max_connections=len(prompts) + 2)
    async with httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(900.0), limits=limits) as client:
        return list(await asyncio.gather(*(one(client, model, prompt, new_tokens, schema) for prompt in prompts)))


def grpc_request(address: str, model: str, prompt: str, new_tokens: int, schema: dict[str, Any] | None) -> Outcome:
    import grpc

    from vinolm.client.common import Target
    from vinolm.client.kserve_grpc import infer_request, output
    from vinolm.server.grpc._proto import grpc_predict_v2_pb2_grpc as pb_grpc
    from vinolm.server.kserve.tensors import COMPLETION, TOKEN_COUNT

    request = infer_request(Target(address, model, max_tokens=new_tokens), [prompt])
    for key, value in {**generation("grpc", schema), "chat": False}.items():
        if isinstance(value, bool):
            request.parameters[key].bool_param = value
        elif isinstance(value, float):
            request.parameters[key].double_param = value
        else:  # a schema: gRPC parameters are scalars, so JSON text
            request.parameters[key].string_param = json.dumps(value)
    start, first, tokens, text = time.perf_counter(), None, 0, b""
    with grpc.insecure_channel(address) as channel:
        call = pb_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(iter([request]))
        for message in call:
            if message.error_message:
                raise RuntimeError(message.error_message)
            names = {t.name for t in message.infer_response.outputs}
            if COMPLETION in names:
                first = time.perf_counter() - start if first is None else first
                text += output(message.infer_response, COMPLETION)[0]
            if TOKEN_COUNT in names:
                tokens = int(output(message.infer_response, TOKEN_COUNT)[0])
                call.cancel()
                break
    return first, tokens, time.perf_counter(), text.decode(errors="replace")


def one_round(args: argparse.Namespace, where: tuple[str, str], model: str, prompts: Prompts, c: int,
              check: Callable[[str], None] | None = None) -> dict[str, Any]:  # fmt: skip
    """C requests at once; ``check`` (the schema's) reads each answer once the round is timed."""
    texts = [prompts() for _ in range(c)]  # all new: the server's prefix cache must not serve them
    began = time.perf_counter()
    if args.protocol == "grpc":
        with ThreadPoolExecutor(c) as pool:
            outs = list(pool.map(lambda text: grpc_request(where[1], model, text, args.new_tokens, args.schema), texts))
    else:
        outs = asyncio.run(http_round(args.protocol, where[0], model, texts, args.new_tokens, args.schema,
                                      chat=args.task != "filler"))
    tokens = sum(o[1] for o in outs)
    if args.task != "filler":  # chat work ends at EOS: each answer must have begun
        if min(o[1] for o in outs) < 1:
            raise RuntimeError("the server answered a request with no tokens")
    elif tokens != c * args.new_tokens:
        raise RuntimeError(f"the server {short_run(tokens, c * args.new_tokens, args.schema is not None)}")
    for out in outs if check else []:
        check(out[3])
    record = round_record(max(o[2] for o in outs) - began, tokens, [o[0] for o in outs if o[0] is not None])
    if args.task != "filler":
        record["answers_sha256"] = hashlib.sha256("\0".join(o[3] for o in outs).encode()).hexdigest()
    return record


def schema_check(folder: Path, tok: Any, schema: dict[str, Any]) -> Callable[[str], None]:
    """An answer's text must start a document of ``schema``. The server sends text, not ids, so
    it is tokenized again: the grammar reads bytes, so any tokenization of valid text passes."""
    encode = functools.partial(tok.encode, add_special_tokens=False)
    return lambda text: check_prefix(folder, encode, schema, encode(text))


#: llama-server's analogue of ``vinolm serve --prompt-lookup``: its n-gram lookup in the tokens so far.
LLAMA_LOOKUP = ("--spec-type", "ngram-simple")


def label_of(args: argparse.Namespace) -> str:
    suffix = SUFFIX if args.schema is not None else ""
    task = f", {args.task}" if args.task != "filler" else ""
    if args.llama_server:
        speculation = (f" -md {Path(args.draft_model).name}" if args.draft_model
                       else " " + " ".join(LLAMA_LOOKUP) if args.prompt_lookup else "")  # fmt: skip
        flash = f" -fa {args.llama_flash_attn}" if args.llama_flash_attn else ""
        return f"llama-server -np {max(args.levels)}{flash}{speculation} ({args.protocol}{task}){suffix}"
    if args.label:
        return args.label
    if args.url:
        from vinolm.bench.runner import server_label

        return f"{server_label(args.url)} ({args.protocol}){suffix}"
    ray = f" Ray {args.replicas}x{args.threads_per_replica} thread(s)" if args.replicas else ""
    speculation = (f" --draft-model {Path(args.draft_model).name}" if args.draft_model
                   else " --prompt-lookup" if args.prompt_lookup else "")  # fmt: skip
    batching = "".join(f" {flag}" for flag in batching_flags(args))
    return f"vinolm serve{ray}{speculation}{batching} ({args.protocol}{task}){suffix}"


def batching_flags(args: argparse.Namespace) -> list[str]:
    """The ``vinolm serve`` flags for the continuous-batching settings asked of the started server."""
    from vinolm.server.cli import batching_args

    return [arg for name, value in batching_args(args).items() for arg in (f"--{name.replace('_', '-')}", str(value))]


def llama_speculation(args: argparse.Namespace) -> list[str]:
    """llama-server's flags for what ``--prompt-lookup`` or ``--draft-model`` ask of vinolm serve."""
    if args.draft_model:
        return ["-md", args.draft_model, "--spec-type", "draft-simple"]
    return list(LLAMA_LOOKUP) if args.prompt_lookup else []


def llama_flash(args: argparse.Namespace) -> list[str]:
    """llama-server's flash-attention flag, when one was asked for."""
    return ["-fa", args.llama_flash_attn] if args.llama_flash_attn else []


def ray_flags(args: argparse.Namespace) -> list[str]:
    """The ``vinolm serve`` flags that put the started server on Ray Serve (none without --replicas)."""
    if not args.replicas:
        return []
    cpus = ["--ray-cpus", str(args.ray_cpus)] if args.ray_cpus else []
    return ["--replicas", str(args.replicas), "--threads-per-replica", str(args.threads_per_replica), *cpus]


def measure(args: argparse.Namespace, base: str, grpc_address: str, pid: int | None) -> dict[str, Any]:
    import openvino as ov
    import openvino_tokenizers  # noqa: F401  (registers the tokenizer operations)

    from vinolm.bench.worker import versions
    from vinolm.engines.native_tokenizer import TokenizerIR
    from vinolm.models import prepare

    folder = prepare(args.model, args.weight_format, progress=lambda _: None).path
    tok = TokenizerIR(ov.Core(), folder)
    prompts = new_prompts(tok.encode, tok.decode, args.prompt_tokens) if args.task == "filler" else \
        task_source(args.task, args.prompt_tokens)
    model = served_name(base)
    where = (base, grpc_address)
    check = schema_check(folder, tok, args.schema) if args.schema is not None else None
    one_round(args, where, model, prompts, max(args.levels), check)  # warm-up
    levels = [level_record(c, [one_round(args, where, model, prompts, c, check) for _ in range(args.rounds)])
              for c in args.levels]  # fmt: skip
    return result_line(label_of(args), versions(), 0.0, [], levels=levels, mode="server",
                       protocol=args.protocol, url=base, model=str(folder), prompt_tokens=args.prompt_tokens,
                       new_tokens=args.new_tokens, server_peak_rss_mb=peak_rss_mb(pid) if pid else None,
                       json_schema=args.json_schema, task=args.task, prompt_lookup=args.prompt_lookup,
                       draft_model=args.draft_model, gguf=args.llama_server)  # fmt: skip


def task_source(task: str, tokens: int) -> Prompts:
    """Each call the next request's message of ``task``, opening with the request's number: the
    passages repeat after the text's last paragraph, and the server's prefix cache must not
    serve a request from an earlier one."""
    message, numbers = task_prompts(task, tokens), itertools.count(1)

    def source() -> str:
        n = next(numbers)
        return f"Request {n}.\n\n{message(n - 1)}"

    return source


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vinolm.bench.server", description=__doc__.splitlines()[0])
    p.add_argument("--url", default=None, help="a running server's base URL (default: start one)")
    p.add_argument("--grpc", default=None, help="its gRPC HOST:PORT (with --url and --protocol grpc)")
    p.add_argument("--protocol", choices=PROTOCOLS, default="openai")
    p.add_argument("--model", default=None, help="model to serve, and whose tokenizer builds the prompt")
    p.add_argument("--weight-format", choices=WEIGHT_FORMATS, default=None)
    p.add_argument("--concurrency", default="1,4,8")
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--label", default=None, help="name of the rows (default: vinolm serve (PROTOCOL))")
    p.add_argument("--ov-config", action="append", default=[], metavar="KEY=VALUE",
                   help="OpenVINO property of the started vinolm serve, repeatable")
    p.add_argument("--llama-server", default=None, metavar="GGUF",
                   help="measure llama.cpp's llama-server on this GGUF instead of vinolm serve")
    p.add_argument("--threads", type=int, default=None, help="llama-server threads (default: all cores)")
    p.add_argument("--llama-flash-attn", choices=("on", "off", "auto"), default=None,
                   help="llama-server -fa (default: its own, auto); which is faster depends on the CPU")
    p.add_argument("--json-schema", nargs="?", const=DEFAULT, default=None, metavar="FILE",
                   help=f"each request carries this JSON schema ({DEFAULT}: one that cannot end early)")
    p.add_argument("--task", choices=TASKS, default="filler",
                   help="filler (raw prompts, exactly --new-tokens each) or chat work: copy or rewrite a "
                        "passage of about --prompt-tokens, or a story (ends at EOS)")
    speculation = p.add_mutually_exclusive_group()
    speculation.add_argument("--prompt-lookup", action="store_true",
                             help="start vinolm serve --prompt-lookup (speculative decoding from the prompt's n-grams; "
                                  "with --llama-server: --spec-type ngram-simple)")
    speculation.add_argument("--draft-model", default=None, metavar="MODEL",
                             help="start the server with this draft model (vinolm serve --draft-model; with "
                                  "--llama-server a GGUF for llama-server -md)")
    batching = p.add_argument_group("the started vinolm serve's continuous batching")
    batching.add_argument("--kv-cache-gb", type=int, default=None, metavar="GB", help="vinolm serve --kv-cache-gb")
    batching.add_argument("--max-batched-tokens", type=int, default=None, metavar="N",
                          help="vinolm serve --max-batched-tokens")
    ray = p.add_argument_group("start the server on Ray Serve (vinolm[ray])")
    ray.add_argument("--replicas", type=int, default=None, metavar="N", help="vinolm serve --replicas N")
    ray.add_argument("--threads-per-replica", type=int, default=1, metavar="T")
    ray.add_argument("--ray-cpus", type=int, default=None, metavar="C", help="logical CPUs of the Ray cluster")
    args = p.parse_args(argv)
    if args.replicas and (args.url or args.llama_server):
        p.error("--replicas starts vinolm serve on Ray; not with --url or --llama-server")
    if args.llama_flash_attn and not args.llama_server:
        p.error("--llama-flash-attn is a flag of llama-server: only with --llama-server")
    if args.llama_server and (args.url or args.protocol != "openai"):
        p.error("--llama-server starts its own server and speaks the OpenAI protocol only")
    if (args.prompt_lookup or args.draft_model) and args.url:
        p.error("--prompt-lookup and --draft-model start a server with them; not with --url")
    if batching_flags(args) and (args.url or args.llama_server):
        p.error("--kv-cache-gb and --max-batched-tokens start vinolm serve with them; not with --url or --llama-server")
    if args.task != "filler" and (args.protocol != "openai" or args.json_schema):
        p.error(f"--task {args.task} asks chat work through the OpenAI protocol, without --json-schema")
    if min(args.prompt_tokens, args.new_tokens, args.rounds) < 1 or (args.threads is not None and args.threads < 1):
        p.error("--prompt-tokens, --new-tokens, --rounds and --threads must be >= 1")
    try:
        args.levels = parse_levels(args.concurrency)
    except ValueError:
        p.error(f"--concurrency takes levels like 1,4,8, got {args.concurrency!r}")
    if not args.levels:
        p.error("--concurrency needs at least one level: this tool measures throughput")
    if args.url and args.protocol == "grpc" and not args.grpc:
        p.error("--protocol grpc with --url needs --grpc HOST:PORT")
    try:
        args.url = http_base(args.url) if args.url else None
    except InvalidRequest as exc:
        p.error(str(exc))
    try:
        args.schema = load_schema(args.json_schema) if args.json_schema else None
    except InvalidRequest as exc:
        p.error(str(exc))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    label = label_of(args)
    try:
        if args.url:
            line = measure(args, args.url, args.grpc or "", None)
        elif args.llama_server:
            threads = args.threads or os.cpu_count() or 1
            with llama_server(args.llama_server, max(args.levels), args.prompt_tokens + args.new_tokens + 64,
                              threads, [*llama_speculation(args), *llama_flash(args)]) as (base, grpc_address, pid):
                line = measure(args, base, grpc_address, pid)
        else:
            from vinolm.models import prepare

            folder = str(prepare(args.model, args.weight_format, progress=lambda _: None).path)
            flags = ["--prompt-lookup"] if args.prompt_lookup else []
            flags += ["--draft-model", args.draft_model] if args.draft_model else []
            flags += batching_flags(args)
            with local_server(folder, max(args.levels), ray_flags(args), ov_config=args.ov_config, flags=flags) as (
                    base, grpc_address, pid):
                line = measure(args, base, grpc_address, None if args.replicas else pid)
    except Exception as exc:  # noqa: BLE001 - one line whatever happens
        emit(error_line(label, f"{type(exc).__name__}: {exc}"))
        return 1
    emit(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
