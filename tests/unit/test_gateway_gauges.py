"""The per-model gauges gateways and autoscalers read: present from the model's load, the
KV-cache use read at scrape time, gone with the model."""

from __future__ import annotations

from tests.fakes import FakeEngine, FakeModel

from vinolm.server.metrics import ServerMetrics
from vinolm.server.service import ModelService

KV = "vinolm_model_kv_cache_usage_ratio"


def samples(metrics: ServerMetrics) -> dict[str, float]:
    lines = [line for line in metrics.render().splitlines() if line and not line.startswith("#")]
    return {name: float(value) for name, _, value in (line.rpartition(" ") for line in lines)}


def test_kv_cache_use_is_read_when_rendered_and_dropped_on_unload() -> None:
    metrics = ServerMetrics()
    usage = [0.25]
    metrics.watch_kv_cache("a", lambda: usage[0])
    metrics.watch_kv_cache("b", lambda: None)  # an engine without a paged cache reports nothing
    assert samples(metrics)[f'{KV}{{model="a"}}'] == 0.25
    usage[0] = 0.5
    got = samples(metrics)
    assert got[f'{KV}{{model="a"}}'] == 0.5 and f'{KV}{{model="b"}}' not in got
    metrics.model_event("a", "unloaded")
    assert not any(name.startswith(KV) for name in samples(metrics))


def test_a_new_service_publishes_zero_gauges() -> None:
    metrics = ServerMetrics()
    ModelService(FakeEngine(FakeModel(context_length=64)), ["m"], metrics=metrics)
    got = samples(metrics)
    assert got['vinolm_model_requests_running{model="m"}'] == 0
    assert got['vinolm_model_requests_queued{model="m"}'] == 0
    assert f'{KV}{{model="m"}}' not in got  # the fake engine has no KV cache
