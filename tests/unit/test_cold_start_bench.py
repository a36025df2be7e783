"""``vinolm bench --cold-start``: the job, the measuring loop (against a fake server) and its table."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from json import dumps
from typing import Any

from vinolm.bench import cold_start
from vinolm.bench.report import cold_start_table, markdown
from vinolm.bench.runner import BenchConfig, cold_start_job


class FakeResponse:
    def __init__(self, payload: Any = None, lines: list[str] | None = None) -> None:
        self.status_code, self.text, self._payload, self._lines = 200, "", payload, lines or []

    def json(self) -> Any:
        return self._payload

    def raise_for_status(self) -> None:
        pass

    def iter_lines(self) -> Iterator[str]:
        return iter(self._lines)


class FakeServer:
    """/v1/models, the repository's load/unload and the two request kinds, with a log of what
    each request found (its model's state, its text)."""

    def __init__(self, models: dict[str, str]) -> None:
        self.tasks = models
        self.state = {name: "unloaded" for name in models}
        self.loads = dict.fromkeys(models, 0)
        self.log: list[tuple[str, str, str]] = []  # (model, state when asked, text)
        self._load(next(iter(models)))  # the first model loads at start

    def _load(self, name: str) -> None:
        if self.state[name] != "loaded":
            self.state[name], self.loads[name] = "loaded", self.loads[name] + 1

    def _ask(self, name: str, text: str) -> None:
        self.log.append((name, self.state[name], text))
        self._load(name)

    def get(self, path: str) -> FakeResponse:
        assert path == "/v1/models"
        return FakeResponse({"data": [{"id": n, "state": self.state[n], "task": t, "loads": self.loads[n],
                                       "load_seconds": 0.5 * self.loads[n]} for n, t in self.tasks.items()]})

    def post(self, path: str, json: dict[str, Any] | None = None) -> FakeResponse:
        if path.endswith("/unload"):
            self.state[path.split("/")[-2]] = "unloaded"
        elif path.endswith("/load"):
            self._load(path.split("/")[-2])
        else:
            assert path == "/v1/embeddings" and json is not None and self.tasks[json["model"]] == "embedding"
            self._ask(json["model"], json["input"])
        return FakeResponse({})

    @contextmanager
    def stream(self, method: str, path: str, json: dict[str, Any]) -> Iterator[FakeResponse]:
        assert path == "/v1/chat/completions" and json["stream"] and json["ignore_eos"]
        self._ask(json["model"], json["messages"][0]["content"])
        chunks = [{"choices": [{"delta": {"role": "assistant"}}]}, {"choices": [{"delta": {"content": "4"}}]}]
        yield FakeResponse(lines=[f"data: {dumps(c)}" for c in chunks] + ["data: [DONE]"])


def test_each_round_unloads_then_asks_cold_then_warm_with_new_texts() -> None:
    server = FakeServer({"chat": "chat", "small": "chat", "embed": "embedding"})
    rows = cold_start.measure(server, runs=2, new_tokens=4)
    assert [r["name"] for r in rows] == ["chat", "small", "embed"]
    # first loads: at start for chat, through the repository for the others; then per round and model
    assert [(name, state) for name, state, _ in server.log] == [
        (n, s) for _ in range(2) for n in ("chat", "small", "embed") for s in ("unloaded", "loaded")]
    texts = [text for _, _, text in server.log]
    assert len(set(texts)) == len(texts)  # no prefix cache can serve one
    chat, _, embed = rows
    assert chat["first_load_s"] == 0.5 and chat["load_s"] == [1.0, 1.5]  # every round a real load
    assert chat["stats"]["unloaded_ttft_s"] is not None and embed["stats"]["unloaded_ttft_s"] is None
    assert set(chat["stats"]) == set(cold_start.STAT_KEYS)


def test_the_job_serves_each_folder_once_for_the_asked_rounds() -> None:
    job = cold_start_job(BenchConfig(runs=7), ["/m/int8", "/m/int4", "/m/int8", "/e/int8"])
    assert job.section == "cold-start" and job.meta["folders"] == ["/m/int8", "/m/int4", "/e/int8"]
    assert job.command[1:3] == ["-m", "vinolm.bench.cold_start"]
    assert job.command[3:] == ["--model", "/m/int8", "--model", "/m/int4", "--model", "/e/int8", "--runs", "7"]


def row(**fields: Any) -> dict[str, Any]:
    def runs(ttft: float | None, total: float) -> list[dict[str, float | None]]:
        return [{"ttft_s": ttft, "total_s": total}, {"ttft_s": ttft and ttft * 2, "total_s": total * 2}]

    models = [cold_start.model_row("smol-int8", "chat", 4.2, [2.0, 3.0], runs(2.0, 2.5), runs(0.1, 0.5)),
              cold_start.model_row("minilm", "embedding", 0.8, [0.3, 0.5], runs(None, 0.4), runs(None, 0.02))]
    return {"label": "vinolm serve cold start", "section": "cold-start", "models": models, "cold_runs": 2,
            "new_tokens": 16, **fields}


def test_the_table_has_a_row_per_model_with_both_latencies_and_their_ratio() -> None:
    table = cold_start_table([row()])
    assert table.startswith("2 rounds per model, chat answers of 16 tokens; every request a new text.")
    lines = table.splitlines()
    assert lines[-2] == ("| smol-int8 | chat | 4.20 | 2.50 (2.00–3.00) | 3000 (2000–4000) | 150 (100–200) "
                         "| 3750 (2500–5000) | 750 (500–1000) | 20.00x | 5.00x |")
    assert lines[-1] == "| minilm | embedding | 0.80 | 0.40 (0.30–0.50) | – | – | 600 (400–800) | 30 (20–40) | – | 20.00x |"


def test_a_failed_job_is_a_row_saying_why_and_the_section_reaches_the_report() -> None:
    failed = cold_start_table([{"label": "vinolm serve cold start", "error": "RuntimeError: unloading x failed"}])
    assert failed.splitlines()[-1].startswith("| vinolm serve cold start | error: RuntimeError: unloading x failed")
    results = {"started": "now", "config": json.loads(json.dumps(BenchConfig(cold_start=True).__dict__)),
               "machine": {"cpu": "cpu", "cpu_count": 2, "memory_gb": 1.0}, "model_ir": "/m/int8",
               "results": [row()]}
    assert "## Cold start: load time and the first request with the model unloaded vs loaded" in markdown(results)
