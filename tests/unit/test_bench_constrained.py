"""``vinolm bench --json-schema``: the flag, the twin rows, the requests each process sends,
the default schema's length and the report's with / without ratios.

The requests are checked against the server's and the engines' own parsing, so a bench
that sent the constraint in a field the server ignores, or with ``ignore_eos`` (which a
constraint refuses), fails here rather than in a half-hour run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jsonschema
import pytest

from vinolm.bench import report
from vinolm.bench.cli import checked_schema, register
from vinolm.bench.constrained import DEFAULT, DEFAULT_SCHEMA, MIN_ITEMS, SUFFIX, load_schema
from vinolm.bench.runner import BenchConfig, single_jobs, throughput_jobs
from vinolm.bench.schema import level_record, round_record
from vinolm.engines.constraints import check_params
from vinolm.errors import InvalidRequest


def _bench_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["bench", *argv])


def test_the_flag_alone_means_the_default_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _bench_args().json_schema is None
    assert _bench_args("--json-schema").json_schema == DEFAULT
    assert _bench_args("--json-schema", "s.json", "--runs", "2").json_schema == "s.json"
    (tmp_path / "s.json").write_text(json.dumps({"type": "array", "items": {"type": "string"}}))
    monkeypatch.chdir(tmp_path)
    assert checked_schema("s.json") == str(tmp_path / "s.json")  # bench.json names the file measured
    assert checked_schema(DEFAULT) == DEFAULT


@pytest.mark.parametrize(("text", "message"), [
    (None, "No such file"), ("{not json", "is not JSON"), ("[1]", "must hold a JSON Schema object"),
    ('{"type": "string", "pattern": "a+"}', "keyword 'pattern'"),
])  # fmt: skip
def test_a_schema_that_cannot_constrain_is_refused_by_name(tmp_path: Path, text: str | None, message: str) -> None:
    path = tmp_path / "schema.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(InvalidRequest, match=message) as caught:
        checked_schema(str(path))
    assert str(caught.value).startswith(f"--json-schema {path}")


@pytest.mark.parametrize("module", ["worker", "server"])
def test_the_processes_take_the_same_flag(module: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from importlib import import_module

    parse_args = import_module(f"vinolm.bench.{module}").parse_args
    assert parse_args([]).schema is None
    assert parse_args(["--json-schema"]).schema == DEFAULT_SCHEMA
    (tmp_path / "s.json").write_text('{"type": "array"}')
    assert parse_args(["--json-schema", str(tmp_path / "s.json")]).schema == {"type": "array"}
    with pytest.raises(SystemExit) as exited:
        parse_args(["--json-schema", str(tmp_path / "missing.json")])
    assert exited.value.code == 2 and "No such file" in capsys.readouterr().err


def test_the_default_schema_cannot_end_within_any_budget() -> None:
    """Its shortest document is over 100 kB (thousands of tokens at 30 bytes a token), and
    one item fewer is not a document: the grammar keeps every bench run going."""
    item = {"name": "", "count": 0}
    shortest = {"items": [item] * MIN_ITEMS}
    jsonschema.validate(shortest, DEFAULT_SCHEMA)
    assert len(json.dumps(shortest)) > 100_000
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"items": [item] * (MIN_ITEMS - 1)}, DEFAULT_SCHEMA)
    assert load_schema(DEFAULT) is DEFAULT_SCHEMA


def _option(command: list[str], name: str) -> str | None:
    return command[command.index(name) + 1] if name in command else None


def test_each_vinolm_row_gets_a_constrained_twin_right_after_it() -> None:
    cfg = BenchConfig(engines=["genai", "native"], peers=["genai-direct"], levels=[8], json_schema=DEFAULT)
    single = single_jobs(cfg, "/ir", None)
    assert [job.label for job in single] == ["vinolm genai", "vinolm genai + json-schema", "vinolm native",
                                             "vinolm native + json-schema", "genai-direct"]  # fmt: skip
    base, twin = single[2], single[3]
    assert _option(base.command, "--json-schema") is None and "--json-schema" not in base.command
    assert _option(twin.command, "--json-schema") == DEFAULT
    assert _option(twin.command, "--label") == "vinolm native + json-schema"
    assert twin.command[:-2] == [a if a != base.label else twin.label for a in base.command]  # same measurement
    assert twin.meta == {"engine": "native", "constraint": "json-schema", "unconstrained": "vinolm native"}
    assert "constraint" not in base.meta and "json-schema" not in str(single[-1].command)  # peers stay as they are

    tput = throughput_jobs(cfg, "/ir", None)
    assert [job.label for job in tput] == ["vinolm genai in-process", "vinolm genai in-process + json-schema",
                                           "vinolm serve (openai)", "vinolm serve (openai) + json-schema"]  # fmt: skip
    assert _option(tput[1].command, "--concurrency") == "8" and _option(tput[1].command, "--json-schema") == DEFAULT
    assert _option(tput[3].command, "--label") == "vinolm serve (openai) + json-schema"
    assert tput[3].meta == {"protocol": "openai", "constraint": "json-schema", "unconstrained": "vinolm serve (openai)"}

    plain = BenchConfig(engines=["genai"], levels=[8])
    assert [job.label for job in single_jobs(plain, "/ir", None) + throughput_jobs(plain, "/ir", None)] == [
        "vinolm genai", "vinolm genai in-process", "vinolm serve (openai)"]  # fmt: skip


def test_the_worker_request_is_one_every_engine_accepts() -> None:
    from vinolm.bench.worker import request

    plain = request("hi", 16)
    assert plain.params.ignore_eos and plain.params.constraint is None
    constrained = request("hi", 16, DEFAULT_SCHEMA)
    assert not constrained.params.ignore_eos and constrained.params.max_new_tokens == 16
    assert constrained.params.constraint.schema == DEFAULT_SCHEMA
    assert check_params(constrained.params) is not None  # ignore_eos with a constraint would be refused here


def test_the_server_requests_carry_the_schema_where_users_send_it() -> None:
    from vinolm.bench.server import generation
    from vinolm.server.kserve.tensors import settings_from
    from vinolm.server.openai.protocol import CompletionRequest

    body = {"model": "m", "prompt": "hi", "max_tokens": 16, "stream": True, **generation("openai", DEFAULT_SCHEMA)}
    wire = CompletionRequest.model_validate_json(json.dumps(body))
    wire.check_supported()
    found = wire.constraint()
    assert found is not None and found[0] == "response_format.json_schema.schema"
    params = wire.to_generation_params(64, constraint=found[1])
    assert params.constraint.schema == DEFAULT_SCHEMA and params.temperature == 0.0
    check_params(params)

    for protocol, schema in (("kserve-rest", DEFAULT_SCHEMA), ("grpc", json.dumps(DEFAULT_SCHEMA))):
        parameters = {**generation(protocol, DEFAULT_SCHEMA), "chat": False, "max_tokens": 16}
        parameters["json_schema"] = schema  # gRPC parameters are scalars: the bench sends JSON text
        settings = settings_from(parameters)
        assert settings.params.constraint.schema == DEFAULT_SCHEMA
        check_params(settings.params)
    assert generation("openai", None) == {"temperature": 0.0, "ignore_eos": True}


def _single(label: str, decode: float, ttft: float, **meta: object) -> dict[str, object]:
    stats = {"decode_tps": {"median": decode, "min": decode, "max": decode},
             "ttft_s": {"median": ttft, "min": ttft, "max": ttft}}  # fmt: skip
    return {"label": label, "section": "single", "stats": stats, "load_s": 1.0, "peak_rss_mb": 1.0, **meta}


def _served(label: str, tps8: float, **meta: object) -> dict[str, object]:
    rounds = [level_record(1, [round_record(1.0, 50, [0.1])]), level_record(8, [round_record(1.0, int(tps8), [0.2])])]
    return {"label": label, "section": "throughput", "levels": rounds, "mode": "server", **meta}


def _twin(label: str) -> dict[str, str]:
    return {"constraint": "json-schema", "unconstrained": label}


def test_the_report_divides_each_constrained_row_by_its_twin() -> None:
    rows = [
        _single("vinolm genai", 100.0, 0.200), _single("vinolm genai + json-schema", 92.0, 0.250, **_twin("vinolm genai")),
        _single("vinolm native", 80.0, 0.1),
        {"label": "vinolm native + json-schema", "section": "single", "error": "boom", **_twin("vinolm native")},
        _served("vinolm serve (openai)", 400.0), _served("vinolm serve (openai) + json-schema", 300.0,
                                                         **_twin("vinolm serve (openai)")),
    ]  # fmt: skip
    table = report.constraint_table(rows).splitlines()
    assert "| vinolm genai | decode tok/s | 100.0 | 92.0 | 0.92x |" in table
    assert "| vinolm genai | TTFT ms | 200.0 | 250.0 | 1.25x |" in table
    assert "| vinolm native | error: boom ||||" in table
    assert "| vinolm serve (openai) | aggregate tok/s c=1 | 50.0 | 50.0 | 1.00x |" in table
    assert "| vinolm serve (openai) | aggregate tok/s c=8 | 400.0 | 300.0 | 0.75x |" in table
    assert report.constraint_table([_single("vinolm genai", 100.0, 0.2)]) == ""  # no twins, no table

    results = {"started": "now", "command": None, "model_ir": "/m", "model_gguf": None,
               "config": {**BenchConfig(json_schema=DEFAULT).__dict__},
               "machine": {"cpu": "cpu", "cpu_count": 2, "memory_gb": 8, "isa": []}, "results": rows}  # fmt: skip
    text = report.markdown(results)
    assert "## JSON-schema constraint: with / without (schema `default`)" in text and "0.75x" in text


def test_a_constrained_row_is_never_compared_with_an_unconstrained_peer() -> None:
    rows = [_single("vinolm genai + json-schema", 90.0, 0.2, **_twin("vinolm genai")),
            {**_single("llama-bench", 100.0, 0.2), "peer": "llama-bench"}]  # fmt: skip
    assert "| 0.90x |" not in report.single_table(rows)
    assert report.ratio_table(rows) == ""  # the only vinolm row is constrained
    tput = [_served("vinolm serve (openai) + json-schema", 300.0, **_twin("vinolm serve (openai)")),
            {**_served("llama-server -np 8 (openai)", 100.0), "peer": "llama-server"},
            {**_served("vinolm genai in-process", 600.0), "mode": "in-process batching"},
            {**_served("vinolm genai in-process + json-schema", 400.0, **_twin("vinolm genai in-process")),
             "mode": "in-process batching"}]  # fmt: skip
    served = next(line for line in report.throughput_table(tput).splitlines()
                  if line.startswith("| vinolm serve (openai) + json-schema | 8 |"))  # fmt: skip
    assert served.endswith("| 0.75x | – |")  # against the constrained in-process row, not llama-server


@pytest.mark.slow
def test_the_prefix_check_accepts_a_document_start_and_refuses_a_wrong_one() -> None:
    import openvino as ov
    import openvino_tokenizers  # noqa: F401  (registers the tokenizer operations)

    from vinolm.bench.constrained import check_prefix
    from vinolm.engines.native_tokenizer import TokenizerIR
    from vinolm.models import prepare

    folder = prepare(None, None, progress=lambda _: None).path
    tok = TokenizerIR(ov.Core(), folder)

    def encode(text: str) -> list[int]:
        return tok.encode(text, add_special_tokens=False)

    check_prefix(folder, encode, DEFAULT_SCHEMA, encode('{"items": [{"name": "apple", "count": 10}, {"na'))
    for wrong in ('{"items": [{"count": 1', '{"items": [{"name": "a", "count": "x"', ' {"items"'):
        with pytest.raises(RuntimeError, match="leaves the schema at token"):
            check_prefix(folder, encode, DEFAULT_SCHEMA, encode(wrong))


def test_a_server_row_started_by_hand_is_labelled_as_constrained() -> None:
    from vinolm.bench.server import label_of, parse_args

    assert label_of(parse_args(["--json-schema"])) == "vinolm serve (openai)" + SUFFIX
    assert label_of(parse_args(["--json-schema", "--protocol", "grpc"])) == "vinolm serve (grpc)" + SUFFIX
    assert label_of(parse_args([])) == "vinolm serve (openai)"
