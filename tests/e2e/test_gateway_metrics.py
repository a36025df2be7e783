"""The gauges Kubernetes inference gateways and autoscalers read from ``/metrics``:
queued and running requests and the KV-cache use, per model, while a real stream runs."""

from __future__ import annotations

import pytest
from tests.e2e.conftest import RunningServer
from tests.e2e.test_openai_server import MODEL, QUESTION, prometheus, sdk

pytestmark = pytest.mark.slow

LABEL = f'{{model="{MODEL}"}}'


def test_gauges_while_a_stream_runs(server: RunningServer) -> None:
    stream = sdk(server).chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=64,
                                                 temperature=0, stream=True)
    chunks = iter(stream)
    next(chunks)  # a token arrived: the engine has stepped with the request's blocks in the cache
    during = prometheus(server)
    rest = list(chunks)
    stream.close()
    assert rest, "the stream ended right after its first chunk"
    assert during[f"vinolm_model_requests_running{LABEL}"] == 1
    assert during[f"vinolm_model_requests_queued{LABEL}"] == 0
    usage = during[f"vinolm_model_kv_cache_usage_ratio{LABEL}"]
    assert 0 < usage <= 1, usage
