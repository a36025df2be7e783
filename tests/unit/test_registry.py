"""The model registry: load on first use, LRU within max_loaded, keep-alive, failed loads."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.fakes import FakeEngine, FakeModel

from vinolm.errors import Overloaded, Unavailable, UnknownModel
from vinolm.server.registry import FOREVER, Registry, ServedModel
from vinolm.server.service import ModelService
from vinolm.types import GenerationParams, Request


class Loader:
    """Builds a FakeEngine service per model and records what happened."""

    def __init__(self, delay: float = 0.0) -> None:
        self.loaded: list[str] = []
        self.closed: list[str] = []
        self.fail: set[str] = set()
        self.delay = delay

    def __call__(self, model: ServedModel) -> ModelService:
        time.sleep(self.delay)
        if model.name in self.fail:
            raise RuntimeError(f"{model.reference} is not a model folder")
        self.loaded.append(model.name)
        engine = FakeEngine(FakeModel(name=model.name))
        close = engine.close
        engine.close = lambda: (self.closed.append(model.name), close())  # type: ignore[method-assign]
        return ModelService(engine, model.names)


def registry(loader: Loader, **kwargs: object) -> Registry:
    models = [ServedModel("ref-a", ["a", "alias-a"]), ServedModel("ref-b", ["b"]), ServedModel("ref-c", ["c"])]
    return Registry(models, loader, **kwargs)  # type: ignore[arg-type]


def test_models_load_on_first_use_and_are_reused() -> None:
    loader = Loader()
    reg = registry(loader)
    assert [s["state"] for s in reg.states()] == ["unloaded"] * 3
    assert reg.service("alias-a") is reg.service("a") is reg.service(None)  # None: the first model
    assert loader.loaded == ["a"] and reg.state("a") == "loaded" and reg.state("b") == "unloaded"


def test_unknown_names_are_404_listing_the_served_ones() -> None:
    with pytest.raises(UnknownModel, match="available: a, alias-a, b, c"):
        registry(Loader()).service("nope")


def test_max_loaded_unloads_the_least_recently_used_idle_model() -> None:
    loader = Loader()
    reg = registry(loader, max_loaded=2)
    reg.service("a"), reg.service("b"), reg.service("a")  # b is now the least recently used
    reg.service("c")
    assert loader.closed == ["b"] and reg.state("b") == "unloaded" and reg.state("a") == reg.state("c") == "loaded"


@contextlib.contextmanager
def busy(service: ModelService) -> Iterator[None]:
    """``service`` with a request in flight (its fake engine held at the gate) until the block ends."""
    engine = service.engine
    assert isinstance(engine, FakeEngine)
    engine.gate.clear()
    ticket = service.submit(Request(prompt="x", params=GenerationParams(max_new_tokens=2)), "test")
    try:
        yield
    finally:
        engine.gate.set()
        list(service.stream(ticket))


def test_a_full_registry_of_busy_models_is_429_not_a_hang() -> None:
    loader = Loader()
    reg = registry(loader, max_loaded=1)
    with busy(reg.service("a")), pytest.raises(Overloaded, match="keeps at most 1"):
        reg.service("b")
    reg.service("b")  # idle again: a makes room
    assert loader.closed == ["a"]


def test_a_failed_load_is_503_with_the_reason_and_is_retried() -> None:
    loader = Loader()
    loader.fail.add("b")
    reg = registry(loader)
    with pytest.raises(Unavailable, match="failed to load: RuntimeError: ref-b is not a model folder"):
        reg.service("b")
    assert reg.state("b") == "failed" and reg.states()[1]["error"].endswith("not a model folder")
    assert reg.service("a").engine.model.name == "a"  # the others keep serving
    loader.fail.clear()
    assert reg.service("b").engine.model.name == "b" and reg.state("b") == "loaded"


def test_concurrent_first_requests_load_once() -> None:
    loader = Loader(delay=0.2)
    reg = registry(loader)
    got: list[ModelService] = []
    threads = [threading.Thread(target=lambda: got.append(reg.service("c"))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert loader.loaded == ["c"] and len({id(s) for s in got}) == 1


def test_keep_alive_unloads_idle_models_only() -> None:
    loader = Loader()
    models = [ServedModel("ref-a", ["a"], keep_alive=FOREVER), ServedModel("ref-b", ["b"])]
    reg = Registry(models, loader, keep_alive=10.0)
    reg.service("a"), reg.service("b")
    now = time.monotonic()
    assert reg.sweep(now + 5) == []
    assert reg.sweep(now + 11) == ["b"] and loader.closed == ["b"] and reg.state("a") == "loaded"


def test_events_reach_listeners_and_close_unloads_everything() -> None:
    events: list[tuple[str, str]] = []
    loader = Loader()
    loader.fail.add("c")
    reg = registry(loader)
    reg.listeners.append(lambda model, event: events.append((model, event)))
    reg.service("a")
    with pytest.raises(Unavailable):
        reg.service("c")
    assert reg.unload("a") and not reg.unload("b")
    reg.service("b")
    reg.close()
    assert events == [("a", "loaded"), ("c", "failed"), ("a", "unloaded"), ("b", "loaded"), ("b", "unloaded")]


def test_draining_refuses_new_work() -> None:
    reg = registry(Loader())
    service = reg.service("a")
    reg.drain()
    assert service.draining
    with pytest.raises(Unavailable, match="shutting down"):
        reg.service("b")


def test_a_name_given_to_two_models_is_refused() -> None:
    with pytest.raises(ValueError, match="given to two models"):
        Registry([ServedModel("x", ["m"]), ServedModel("y", ["m"])], Loader())


def test_metrics_show_each_model_and_the_totals() -> None:
    from vinolm.server.metrics import ServerMetrics

    metrics = ServerMetrics()
    metrics.set_gauges(2, 1, model="a")
    metrics.set_gauges(3, 0, model="b")
    for event in ("loaded", "unloaded", "loaded", "failed"):
        metrics.model_event("a", event)
    text = metrics.render()
    assert "vinolm_requests_running 5\n" in text and "vinolm_requests_queued 1\n" in text
    assert 'vinolm_model_requests_running{model="b"} 3' in text
    assert 'vinolm_model_loaded_total{model="a"} 2' in text and 'vinolm_model_unloaded_total{model="a"} 1' in text
    assert 'vinolm_model_failed_total{model="a"} 1' in text and 'vinolm_model_loaded{model="a"} 1' in text


def test_unload_is_false_for_an_unloaded_model_and_429_for_a_busy_one() -> None:
    loader = Loader()
    reg = registry(loader)
    service = reg.service("a")
    assert not reg.unload("b")
    with busy(service), pytest.raises(Overloaded, match="'a' is busy"):
        reg.unload("alias-a")
    assert reg.unload("alias-a") and reg.state("a") == "unloaded" and loader.closed == ["a"]


# -- what a model is, before it loads ------------------------------------------------------------
def _folder(root: Path, name: str, info: dict[str, object]) -> str:
    folder = root / name
    folder.mkdir()
    (folder / "openvino_model.xml").write_text("<net/>")
    (folder / "vinolm.json").write_text(json.dumps(info))
    return str(folder)


def test_kserve_metadata_knows_an_embedding_model_before_it_loads(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Metadata comes from the export's vinolm.json, else the embedding catalog, never from a load."""
    from vinolm.server.kserve.embeddings import metadata_for

    monkeypatch.setenv("VINOLM_HOME", str(tmp_path / "home"))  # nothing prepared there
    embed = _folder(tmp_path, "embed", {"task": "feature-extraction", "embedding": {"dimensions": 48}})
    chat = _folder(tmp_path, "chat", {"task": "text-generation-with-past"})
    loader = Loader()
    reg = Registry([ServedModel(chat, ["chat"]), ServedModel(embed, ["embed"]),
                    ServedModel("all-minilm-l6-v2", ["minilm"])], loader)
    meta = metadata_for(reg, "embed")
    assert [(t.name, t.datatype, t.shape) for t in meta.inputs] == [("text_input", "BYTES", [-1])]
    assert [(t.name, t.datatype, t.shape) for t in meta.outputs] == [("embedding", "FP32", [-1, 48])]
    assert metadata_for(reg, "minilm").outputs[0].shape == [-1, 384]  # the catalog's width, not exported yet
    assert [t.name for t in metadata_for(reg, "chat").inputs] == ["pre_prompt"]
    assert loader.loaded == [] and {s["state"] for s in reg.states()} == {"unloaded"}
    with pytest.raises(UnknownModel):
        metadata_for(reg, "nope")


def test_kserve_repository_loads_and_unloads_on_request() -> None:
    from fastapi.testclient import TestClient

    from vinolm.server.app import build_app

    loader = Loader()
    reg = registry(loader)
    with TestClient(build_app(reg, ui=False)) as client:
        index = lambda: {e["name"]: e["state"] for e in client.post("/v2/repository/index").json()}
        assert client.post("/v2/repository/models/b/load").status_code == 200 and index()["b"] == "READY"
        for _ in range(2):  # the second: already unloaded, still a success
            assert client.post("/v2/repository/models/b/unload").status_code == 200
        assert index()["b"] == "UNAVAILABLE" and loader.closed == ["b"]
        missing = client.post("/v2/repository/models/nope/unload")
        assert missing.status_code == 404 and "available: a, alias-a, b, c" in missing.json()["error"]
        cards = {c["id"]: c for c in client.get("/v1/models").json()["data"]}
        assert cards["b"]["loads"] == 1 and cards["b"]["load_seconds"] >= 0 and cards["c"]["load_seconds"] is None


def test_models_dir_skips_the_hidden_folders_of_exports_in_progress(tmp_path: Path) -> None:
    from vinolm.server.cli import _model_folders

    for name in ("smol", ".smol.tmp-123-abc"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "openvino_model.xml").write_text("<net/>")
    assert _model_folders(tmp_path) == [tmp_path / "smol"]
