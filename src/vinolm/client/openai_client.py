"""Client for vinolm's OpenAI endpoint: one chat completion per prompt, all sent at once.

Several prompts go out concurrently so the server batches them, the way one KServe
request with N prompts does. Streaming uses server-sent events with usage included,
which gives the exact generated-token count of each prompt.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from vinolm.client.common import (
    ClientError,
    OnText,
    Retryable,
    RunResult,
    Stopwatch,
    Target,
    aretrying,
    http_base,
    raise_for_status,
    request_headers,
)

TIMEOUT = httpx.Timeout(600.0, connect=10.0)


def run(target: Target, prompts: list[str], stream: bool, on_text: OnText | None = None) -> RunResult:
    return asyncio.run(_run(target, prompts, stream, on_text))


async def _run(target: Target, prompts: list[str], stream: bool, on_text: OnText | None) -> RunResult:
    result = RunResult(prompts, [""] * len(prompts), [0] * len(prompts))
    watch = Stopwatch()
    base = http_base(target.url)
    one = _streamed if stream else _unary

    async def ask(http: httpx.AsyncClient, index: int) -> None:
        async def once() -> None:
            try:
                await one(http, target, index, result, watch, on_text)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                raise Retryable(f"cannot connect to {base}: {exc}; is `vinolm serve` running there?") from None
            except httpx.TimeoutException:
                raise ClientError(f"{base} sent nothing for {TIMEOUT.read:.0f} s") from None

        await aretrying(target.retry, once)

    async with httpx.AsyncClient(base_url=base, headers=request_headers(target), timeout=TIMEOUT) as http:
        await asyncio.gather(*(ask(http, i) for i in range(len(prompts))))
    result.total_time = watch.elapsed()
    result.response_times = watch.gaps
    return result


def _body(target: Target, prompt: str, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": target.model, "messages": [{"role": "user", "content": prompt}]}
    if target.max_tokens is not None:
        body["max_tokens"] = target.max_tokens
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    return body


async def _unary(http: httpx.AsyncClient, target: Target, index: int, result: RunResult,
                 watch: Stopwatch, on_text: OnText | None) -> None:
    try:
        response = await http.post("/v1/chat/completions", json=_body(target, result.prompts[index], False))
    except (httpx.RemoteProtocolError, httpx.ReadError) as exc:  # the answer never came: nothing seen
        raise Retryable(f"the connection closed before the answer: {exc}") from None
    raise_for_status(response.status_code, response.content, response.headers.get("retry-after"))
    data = response.json()
    result.completions[index] = data["choices"][0]["message"]["content"] or ""
    result.token_counts[index] = data.get("usage", {}).get("completion_tokens", 0)


async def _streamed(http: httpx.AsyncClient, target: Target, index: int, result: RunResult,
                    watch: Stopwatch, on_text: OnText | None) -> None:
    """One streamed answer. A stream that ends without ``[DONE]`` is retried if nobody saw
    its text: none came yet, or it went to no ``on_text`` (the caller gets only the whole
    answer, so the partial one is dropped and the request sent again). Once ``on_text`` has
    shown part of an answer, sending it again would show another: that is an error."""
    body = _body(target, result.prompts[index], True)
    done = False
    result.completions[index], result.token_counts[index] = "", 0  # what an earlier try left
    try:
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code >= 400:
                raise_for_status(response.status_code, await response.aread(), response.headers.get("retry-after"))
            async for line in response.aiter_lines():
                if line.endswith("[DONE]"):
                    done = True
                if not line.startswith("data:") or done:
                    continue
                event = json.loads(line.removeprefix("data:"))
                if isinstance(event.get("error"), dict):  # the server failed midway, then ended the stream
                    raise ClientError(f"the answer to prompt {index} failed midway: {event['error'].get('message')}")
                if event.get("usage"):
                    result.token_counts[index] = event["usage"]["completion_tokens"]
                text = "".join((c.get("delta") or {}).get("content") or "" for c in event.get("choices", []))
                if text:
                    watch.response()
                    result.completions[index] += text
                    if on_text:
                        on_text(index, text)
    except (httpx.RemoteProtocolError, httpx.ReadError):
        pass  # judged below by what arrived
    if not done:
        if not result.completions[index]:
            raise Retryable("the stream closed before its first token")
        if on_text is None:
            raise Retryable(f"the stream closed after {len(result.completions[index])} characters nobody saw yet")
        raise ClientError(f"the stream of prompt {index} closed after {len(result.completions[index])} "
                          "characters, before its end")
