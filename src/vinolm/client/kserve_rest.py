"""Client for KServe v2 REST: the demo's curl call, all prompts in one ``pre_prompt`` tensor.

KServe REST has no streaming; for partial answers use the gRPC or OpenAI protocol.
"""

from __future__ import annotations

from typing import Any

import httpx

from vinolm.client.common import (
    ClientError,
    Retryable,
    RunResult,
    Stopwatch,
    Target,
    http_base,
    raise_for_status,
    request_headers,
    retrying,
)

TIMEOUT = httpx.Timeout(600.0, connect=10.0)


def infer_body(prompts: list[str], max_tokens: int | None) -> dict[str, Any]:
    """The JSON request: ``pre_prompt`` BYTES [N], settings in ``parameters``."""
    body: dict[str, Any] = {
        "inputs": [{"name": "pre_prompt", "shape": [len(prompts)], "datatype": "BYTES", "data": prompts}]
    }
    if max_tokens is not None:
        body["parameters"] = {"max_tokens": max_tokens}
    return body


def run(target: Target, prompts: list[str]) -> RunResult:
    """The prompts in one infer request (KServe REST does not stream: the CLI refuses --stream)."""
    base = http_base(target.url)
    url = f"{base}/v2/models/{target.model}/infer"
    watch = Stopwatch()

    def once() -> httpx.Response:
        try:
            response = httpx.post(url, json=infer_body(prompts, target.max_tokens),
                                  headers=request_headers(target), timeout=TIMEOUT)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise Retryable(f"cannot connect to {base}: {exc}; is `vinolm serve` running there?") from None
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:  # no answer: nothing was seen
            raise Retryable(f"the connection closed before the answer: {exc}") from None
        except httpx.TimeoutException:
            raise ClientError(f"{base} sent nothing for {TIMEOUT.read:.0f} s") from None
        raise_for_status(response.status_code, response.content, response.headers.get("retry-after"))
        return response

    response = retrying(target.retry, once)
    outputs = {output["name"]: output["data"] for output in response.json()["outputs"]}
    return RunResult(prompts, list(outputs["completion"]), list(outputs["token_counts"]), watch.elapsed())
