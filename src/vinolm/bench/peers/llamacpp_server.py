"""llama.cpp peer, server mode: aggregate throughput of llama-cpp-python's OpenAI server.

    python -m vinolm.bench.peers.llamacpp_server --model PATH.gguf \\
        --concurrency 1,4,8 --new-tokens 64 --prompt-tokens 128 --threads 2

Starts ``python -m llama_cpp.server`` (same interpreter) on 127.0.0.1 with a free port,
waits until ``/v1/models`` answers, and for each concurrency level fires that many
streaming ``/v1/completions`` requests at once (same prompt, ``max_tokens`` new tokens,
temperature 0, every end-of-generation token biased to -100 so no request stops early),
``--rounds`` times. Per level it reports the aggregate generated tokens/s of each round
(sum of tokens / wall time from the first send to the last byte) and its median, and
the TTFT of every request (time to the first streamed chunk, queueing included).
Then it stops the server and prints ONE JSON line.

About llama-cpp-python's server (checked in 0.3.x): it holds ONE ``Llama`` and one
context, behind an asyncio lock, and has no parallel slots / continuous batching (the
``n_parallel`` of llama.cpp's own C++ ``llama-server`` does not exist here), so
concurrent requests are served one after another. Its default ``interrupt_requests=True``
would even cut the running stream short when another request arrives; this script
starts it with ``--interrupt_requests False`` so every request runs to completion.
It also reuses the KV cache of the previous request when prompts share a prefix, so with
the same prompt every request but the first skips most of the prefill; pass
``--distinct-prompts`` to give each request its own first word (no reuse).

If ``llama_cpp`` (or httpx) is not importable it prints a ``skipped`` line and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from vinolm.bench.peers.llamacpp import (
    FILLER,
    PEER,
    build_description,
    context_size,
    eog_token_ids,
    import_llama_cpp,
    lead,
    loadavg,
    peak_rss_mb,
    skip_line,
    system_info,
)

SERIAL_NOTE = (
    "llama-cpp-python's server has one Llama/context behind a lock and no parallel "
    "slots: concurrent requests are served one at a time (queued), not batched"
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_prompt_tokens(llm, text: str) -> int:
    """How many tokens the server's ``create_completion`` makes of ``text``."""
    model = getattr(llm, "_model", None)
    add_bos = bool(model.add_bos_token()) if model is not None else True
    bos = 1 if add_bos and llm.token_bos() != -1 else 0
    return bos + len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))


def prompt_text(llm, n: int, lead: str = "") -> str:
    """A prompt text that the server tokenizes to ``n`` tokens (as close as it gets)."""
    words = (FILLER * (n // 50 + 2)).split(" ")
    lo, hi = 1, len(words)  # largest word count whose prompt has <= n tokens
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if server_prompt_tokens(llm, lead + " ".join(words[:mid])) <= n:
            lo = mid
        else:
            hi = mid - 1
    text = lead + " ".join(words[:lo])
    for _ in range(64):  # pad with one-token words up to exactly n
        if server_prompt_tokens(llm, text) >= n:
            break
        text += " a"
    return text


class Server:
    def __init__(self, args: argparse.Namespace, n_ctx: int) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix="llamacpp-server-", suffix=".log", delete=False
        )
        cmd = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", os.path.abspath(args.model),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--n_threads", str(args.threads),
            "--n_threads_batch", str(args.threads),
            "--n_ctx", str(n_ctx),
            "--n_batch", "512",
            "--interrupt_requests", "False",
            "--verbose", "False",
        ]  # fmt: skip
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, httpx, timeout_s: float) -> float:
        t0 = time.perf_counter()
        deadline = t0 + timeout_s
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.tail()}")
            try:
                r = httpx.get(self.base + "/v1/models", timeout=2.0)
                if r.status_code == 200:
                    return time.perf_counter() - t0
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not ready after {timeout_s}s: {self.tail()}")

    def peak_rss_mb(self) -> float | None:
        return peak_rss_mb(self.proc.pid)

    def tail(self, n: int = 1500) -> str:
        try:
            return Path(self.log.name).read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.log.close()
        try:
            os.unlink(self.log.name)
        except OSError:
            pass


def request_body(prompt: str, new_tokens: int, eog: list[int], stream: bool) -> dict:
    return {
        "prompt": prompt,
        "max_tokens": new_tokens,
        "temperature": 0.0,
        "stream": stream,
        "logit_bias": {str(t): -100.0 for t in eog},
    }


async def one_request(client, url: str, body: dict, t_round: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    t_first = None
    chunks = 0
    finish = None
    async with client.stream("POST", url, json=body) as resp:
        if resp.status_code != 200:
            text = (await resp.aread()).decode(errors="replace")[:300]
            raise RuntimeError(f"HTTP {resp.status_code}: {text}")
        async for line in resp.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            choices = chunk.get("choices") or []
            if not choices:
                continue
            if t_first is None:
                t_first = time.perf_counter()
            chunks += 1
            finish = choices[0].get("finish_reason") or finish
    t_end = time.perf_counter()
    return {
        "start_offset_s": round(t0 - t_round, 6),
        "ttft_s": round((t_first or t_end) - t0, 6),
        "latency_s": round(t_end - t0, 6),
        "chunks": chunks,
        "finish_reason": finish,
        "end": t_end,
    }


async def run_round(httpx, base: str, prompts: list[str], args, eog) -> dict[str, Any]:
    url = base + "/v1/completions"
    limits = httpx.Limits(max_connections=len(prompts) + 2)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0), limits=limits) as client:
        t0 = time.perf_counter()
        reqs = await asyncio.gather(
            *(one_request(client, url, request_body(p, args.new_tokens, eog, True), t0)
              for p in prompts)
        )  # fmt: skip
    wall = max(r.pop("end") for r in reqs) - t0
    # finish_reason "length" means max_tokens were generated (the count was checked
    # non-streamed before); otherwise fall back to the streamed chunk count.
    tokens = sum(args.new_tokens if r["finish_reason"] == "length" else r["chunks"] for r in reqs)
    return {
        "wall_s": round(wall, 6),
        "generated_tokens": tokens,
        "aggregate_tps": round(tokens / wall, 2),
        "requests": reqs,
    }


def check_count(httpx, base: str, prompt: str, args, eog) -> dict[str, Any]:
    """One non-streamed request: the server's own usage numbers prove the token count."""
    r = httpx.post(
        base + "/v1/completions",
        json=request_body(prompt, args.new_tokens, eog, False),
        timeout=600.0,
    )
    r.raise_for_status()
    body = r.json()
    usage = body.get("usage") or {}
    return {
        "prompt_tokens": usage.get("prompt_tokens"),
        "completion_tokens": usage.get("completion_tokens"),
        "finish_reason": (body.get("choices") or [{}])[0].get("finish_reason"),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m vinolm.bench.peers.llamacpp_server",
        description="Throughput of llama-cpp-python's OpenAI server; prints one JSON line.",
    )
    p.add_argument("--model", required=True, help="path to a .gguf file")
    p.add_argument("--concurrency", default="1,4,8", help="comma-separated levels")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--rounds", type=int, default=3, help="rounds per level (median)")
    p.add_argument("--distinct-prompts", action="store_true",
                   help="give every request its own first word (no KV prefix reuse)")  # fmt: skip
    p.add_argument("--ready-timeout", type=float, default=180.0)
    p.add_argument("--build", default=None, help="describe the build (default: recorded)")
    args = p.parse_args(argv)
    try:
        args.levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
    except ValueError:
        p.error("--concurrency must be comma-separated integers, e.g. 1,4,8")
    if not args.levels or min(args.levels) < 1:
        p.error("--concurrency levels must be >= 1")
    for name in ("new_tokens", "prompt_tokens", "threads", "rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    llama_cpp = import_llama_cpp()
    try:
        import httpx
    except ImportError:
        httpx = None
    if llama_cpp is None or httpx is None:
        line = skip_line()
        if llama_cpp is not None:
            line["skipped"] = "httpx is not installed"
        print(json.dumps(line), flush=True)
        return 0
    if not Path(args.model).is_file():
        print(json.dumps({"peer": PEER, "mode": "server", "error": f"model not found: {args.model}"}))
        return 2

    # The client side only needs the tokenizer: prompt texts and the EOG ids to bias.
    try:
        vocab = llama_cpp.Llama(model_path=args.model, vocab_only=True, verbose=False)
    except ValueError as exc:  # llama-cpp-python's "Failed to load model from file"
        print(json.dumps({"peer": PEER, "mode": "server", "error": f"llama.cpp cannot load {args.model}: {exc}"}))
        return 1
    eog = eog_token_ids(llama_cpp, vocab)
    max_level = max(args.levels)
    n_prompts = max_level + 1 if args.distinct_prompts else 1
    prompts = [
        prompt_text(vocab, args.prompt_tokens,
                    lead=lead(i) if args.distinct_prompts else "")
        for i in range(n_prompts)
    ]  # fmt: skip
    del vocab
    # Room for the prompt, the answer, and the lead words of distinct prompts.
    n_ctx = context_size(args.prompt_tokens + 16, args.new_tokens)

    load_before = loadavg()
    server = Server(args, n_ctx)
    levels: list[dict[str, Any]] = []
    try:
        ready_s = server.wait_ready(httpx, args.ready_timeout)
        check = check_count(httpx, server.base, prompts[0], args, eog)
        if check["completion_tokens"] != args.new_tokens:
            raise RuntimeError(f"server generated {check} tokens, wanted {args.new_tokens}")
        # Warm-up: one streamed request, untimed.
        asyncio.run(run_round(httpx, server.base, prompts[:1], args, eog))
        counter = 1  # prompts[0] was used by the check and the warm-up
        for level in args.levels:
            rounds = []
            for _ in range(args.rounds):
                if args.distinct_prompts:
                    # consecutive requests never share a prompt, so no KV prefix reuse
                    ps = [prompts[(counter + i) % n_prompts] for i in range(level)]
                    counter += level
                else:
                    ps = [prompts[0]] * level
                rounds.append(asyncio.run(run_round(httpx, server.base, ps, args, eog)))
            ttfts = [q["ttft_s"] for rd in rounds for q in rd["requests"]]
            levels.append({
                "concurrency": level,
                "aggregate_tps_median": round(statistics.median(rd["aggregate_tps"] for rd in rounds), 2),
                "aggregate_tps_rounds": [rd["aggregate_tps"] for rd in rounds],
                "ttft_s_median": round(statistics.median(ttfts), 6),
                "ttft_s_min": round(min(ttfts), 6),
                "ttft_s_max": round(max(ttfts), 6),
                "rounds": rounds,
            })  # fmt: skip
        rss = server.peak_rss_mb()
    except Exception as exc:  # noqa: BLE001 - report, never hang
        server.stop()
        print(json.dumps({"peer": PEER, "mode": "server", "error": str(exc)[:2000]}), flush=True)
        return 1
    server.stop()

    out = {
        "peer": PEER,
        "mode": "server",
        "server": "llama_cpp.server (llama-cpp-python OpenAI-compatible server)",
        "version": getattr(llama_cpp, "__version__", "unknown"),
        "system_info": system_info(llama_cpp),
        "build": build_description(args.build),
        "model": os.path.abspath(args.model),
        "threads": args.threads,
        "n_ctx": n_ctx,
        "prompt_tokens": check["prompt_tokens"],
        "new_tokens": args.new_tokens,
        "distinct_prompts": bool(args.distinct_prompts),
        "prefix_cache_reuse": not args.distinct_prompts,
        "parallel_slots": False,
        "serialises_requests": True,
        "note": SERIAL_NOTE,
        "server_args": server.cmd[3:],
        "count_check": check,
        "ready_s": round(ready_s, 3),
        "server_peak_rss_mb": rss,
        "cpu_count": os.cpu_count(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "levels": levels,
    }
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
