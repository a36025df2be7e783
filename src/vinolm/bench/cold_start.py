"""Cold start through ``vinolm serve``: each model's load time and its first request's latency
with the model unloaded vs loaded; prints one JSON line (see ``schema``).

    python -m vinolm.bench.cold_start --model FOLDER --model FOLDER ... --runs K [--new-tokens N]

One server serves every model as users start it (no ``--preload``: the first model loads at
start, the others on their first request), in an empty ``$VINOLM_HOME`` of its own, so with
vinolm's own model cache empty: each model's first load compiles it and fills the cache, and
is reported apart (``first_load_s``); the K loads after it use the cache as every later load
on a user's machine does (genai's paged-attention pipelines stop caching once OpenVINO is
seen rejecting their blobs, ``vinolm.engines.compile_cache``). K rounds then go round-robin
over the models, so a drift of a shared machine hits them alike; per model and round: unload
it through KServe's repository extension (``POST /v2/repository/models/{name}/unload``, then
/v1/models must say ``unloaded``), send a request, which loads it, then the same kind of
request to the loaded model. Chat models get a streamed ``/v1/chat/completions`` of N tokens
(greedy, EOS ignored) timed to the first token and to the end, embedding models a ``/v1/embeddings`` of one sentence. Every request is a new
text, so no prefix cache flatters the loaded case. The load time is the registry's own
(``load_seconds`` of /v1/models: reading and compiling, what the first request waited for).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from vinolm.bench.schema import emit, error_line, result_line, spread

LABEL = "vinolm serve cold start"
#: The per-model measurements a row summarises (seconds).
STAT_KEYS = ("load_s", "unloaded_ttft_s", "loaded_ttft_s", "unloaded_total_s", "loaded_total_s")
_texts = itertools.count()


@contextmanager
def models_server(folders: list[str], home: str, timeout_s: float = 300.0) -> Iterator[tuple[str, int]]:
    """``vinolm serve`` of every folder on loopback with ``$VINOLM_HOME`` at ``home``; yields (URL, pid)."""
    from vinolm.bench.server import _server_process, _wait_ready

    cmd = [sys.executable, "-m", "vinolm.cli", "serve", *[a for f in folders for a in ("--model", f)],
           "--host", "127.0.0.1", "--port", "0", "--grpc-port", "0", "--no-ui", "--log-level", "warning"]  # fmt: skip
    with _server_process(cmd, "vinolm-bench-cold-start", env={**os.environ, "VINOLM_HOME": home}) as (proc, log):
        yield _wait_ready(proc, log, timeout_s), proc.pid


def cards(client: Any) -> dict[str, dict[str, Any]]:
    """/v1/models by name: state, task, loads, load_seconds."""
    return {card["id"]: card for card in client.get("/v1/models").json()["data"]}


def unload(client: Any, name: str) -> None:
    """Unload ``name`` the way a user can, and make sure it is."""
    answer = client.post(f"/v2/repository/models/{name}/unload")
    state = cards(client)[name]["state"]
    if answer.status_code != 200 or state != "unloaded":
        raise RuntimeError(f"unloading {name} failed (HTTP {answer.status_code}: {answer.text[:200]}; {state})")


def chat_request(client: Any, name: str, new_tokens: int) -> dict[str, float | None]:
    """A streamed chat answer of ``new_tokens`` tokens to a question never asked before."""
    n = next(_texts)
    body = {"model": name, "max_tokens": new_tokens, "stream": True, "temperature": 0.0, "ignore_eos": True,
            "messages": [{"role": "user", "content": f"Question {n}: what is {n} times {n + 7}?"}]}
    start, first = time.perf_counter(), None
    with client.stream("POST", "/v1/chat/completions", json=body) as resp:
        if resp.status_code != 200:
            raise RuntimeError(f"chat with {name}: HTTP {resp.status_code}: {resp.read()[:300]!r}")
        for line in resp.iter_lines():
            if first is None and line.startswith("data:") and not line.endswith("[DONE]"):
                choices = json.loads(line[5:]).get("choices") or [{}]
                if choices[0].get("delta", {}).get("content"):
                    first = time.perf_counter() - start
    return {"ttft_s": first, "total_s": time.perf_counter() - start}


def embed_request(client: Any, name: str) -> dict[str, float | None]:
    """One new sentence embedded: the first token is the whole answer, so no TTFT."""
    n = next(_texts)
    start = time.perf_counter()
    resp = client.post("/v1/embeddings", json={"model": name, "input": f"Sentence {n}: cat {n} sits on mat {n * 7}."})
    if resp.status_code != 200:
        raise RuntimeError(f"embedding with {name}: HTTP {resp.status_code}: {resp.text[:300]}")
    return {"ttft_s": None, "total_s": time.perf_counter() - start}


def model_row(name: str, task: str, first_load_s: float, loads: list[float],
              unloaded: list[dict[str, float | None]], loaded: list[dict[str, float | None]]) -> dict[str, Any]:
    """One model's measurements and their median, min and max (``STAT_KEYS``)."""
    stats = {"load_s": spread(loads)}
    for state, runs in (("unloaded", unloaded), ("loaded", loaded)):
        for key in ("ttft_s", "total_s"):
            stats[f"{state}_{key}"] = spread([r[key] for r in runs])
    return {"name": name, "task": task, "first_load_s": round(first_load_s, 4), "load_s": loads,
            "unloaded": unloaded, "loaded": loaded, "stats": stats}


def measure(client: Any, runs: int, new_tokens: int) -> list[dict[str, Any]]:
    """The first load of each model, then ``runs`` round-robin rounds of unload, cold, warm."""

    def ask(name: str, task: str) -> dict[str, float | None]:
        return embed_request(client, name) if task == "embedding" else chat_request(client, name, new_tokens)

    names = list(cards(client))
    first: dict[str, float] = {}
    tasks: dict[str, str] = {}
    for name in names:
        if cards(client)[name]["state"] != "loaded":
            client.post(f"/v2/repository/models/{name}/load").raise_for_status()
        card = cards(client)[name]
        first[name], tasks[name] = float(card["load_seconds"]), str(card["task"])
    loads: dict[str, list[float]] = {n: [] for n in names}
    timed: dict[str, dict[str, list[dict[str, float | None]]]] = {n: {"unloaded": [], "loaded": []} for n in names}
    for _ in range(runs):
        for name in names:
            unload(client, name)
            timed[name]["unloaded"].append(ask(name, tasks[name]))
            loads[name].append(float(cards(client)[name]["load_seconds"]))
            timed[name]["loaded"].append(ask(name, tasks[name]))
    return [model_row(n, tasks[n], first[n], loads[n], timed[n]["unloaded"], timed[n]["loaded"]) for n in names]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vinolm.bench.cold_start", description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", required=True, metavar="FOLDER", help="a model to serve, repeatable")
    p.add_argument("--runs", type=int, default=5, help="unload / cold / warm rounds per model")
    p.add_argument("--new-tokens", type=int, default=16, help="tokens of each chat answer")
    args = p.parse_args(argv)
    if args.runs < 1 or args.new_tokens < 1:
        p.error("--runs and --new-tokens must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    import httpx

    from vinolm.bench.peers.llamacpp import peak_rss_mb
    from vinolm.bench.worker import versions

    args = parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="vinolm-bench-home-") as home, \
                models_server(args.model, home) as (base, pid), \
                httpx.Client(base_url=base, timeout=httpx.Timeout(600.0)) as client:  # fmt: skip
            models = measure(client, args.runs, args.new_tokens)
            rss = peak_rss_mb(pid)
    except Exception as exc:  # noqa: BLE001 - one line whatever happens
        emit(error_line(LABEL, f"{type(exc).__name__}: {exc}"))
        return 1
    emit(result_line(LABEL, versions(), 0.0, [], mode="cold-start", models=models, new_tokens=args.new_tokens,
                     cold_runs=args.runs, server_peak_rss_mb=rss))
    return 0


if __name__ == "__main__":
    sys.exit(main())
