"""Constrained greedy output is the same on genai (xgrammar), native and optimum (llguidance):
two JSON schemas, any JSON object, a regex, a choice and a GBNF grammar.

The default model, f32 math (the ``engine`` fixture's F32) and, for genai, the stateful
model (``ATTENTION_BACKEND=SDPA``) as in test_engine_parity.py, so any difference is the
constraint's. Each prompt starts with its own word: the native engine keeps the KV state
of a prompt's common prefix for the next request, and a prompt computed in two pieces may
part from one computed at once at a near-tie (measured: it did, on json_object).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import jsonschema
import pytest
from tests.integration.conftest import F32

import vinolm
from vinolm.engines import Engine, EngineOptions, load_engine
from vinolm.errors import InvalidRequest
from vinolm.models import PreparedModel
from vinolm.prompts.tools import HERMES_OPEN, CallParser, auto_constraint
from vinolm.types import Constraint, GenerationParams, Message, Request, Tool

pytestmark = pytest.mark.slow

SDPA = {"ATTENTION_BACKEND": "SDPA"}
PET = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "species": {"enum": ["cat", "dog", "parrot"]},
        "toys": {"type": "array", "items": {"type": "string", "maxLength": 16}, "maxItems": 3},
        "owner": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                                   "city": {"type": "string", "maxLength": 20}},
                  "required": ["name", "city"]},
    },
    "required": ["name", "species", "toys", "owner"],
}
PRODUCT = {
    "type": "object",
    "properties": {"price": {"type": "number"}, "quantity": {"type": "integer"}, "in_stock": {"type": "boolean"}},
    "required": ["price", "quantity", "in_stock"],
}
CASES: list[tuple[str, Constraint]] = [
    ("Describe a pet and its owner as JSON.\n", Constraint("json_schema", schema=PET)),
    ("Shop inventory record for one apple, as JSON:\n", Constraint("json_schema", schema=PRODUCT)),
    ("A JSON object with the keys city and country for Paris:\n", Constraint("json_object")),
    ("Give a code like 123-abc.\n", Constraint("regex", pattern=r"[0-9]{3}-[a-z]{2,8}")),
    ("Which city is the capital of France?\n", Constraint("choice", choices=("Paris", "London", "Rome"))),
    ("Name three colours, separated by commas.\n",
     Constraint("grammar", grammar='root ::= colour ", " colour ", " colour\ncolour ::= [a-z]{1,12}\n')),
]
#: What the grammar case means, as a Python regex, to check its answer.
COLOURS = r"[a-z]{1,12}, [a-z]{1,12}, [a-z]{1,12}"
GREEDY = GenerationParams(max_new_tokens=80)
Result = tuple[list[int], str, str]


@pytest.fixture(scope="module")
def outputs(engine: Callable[..., Engine], default_model: PreparedModel) -> dict[str, list[Result]]:
    """Every case on every engine: (token ids, text, finish reason)."""
    folder = default_model.path
    loaded = {
        "genai": engine("genai", folder, **SDPA),
        "native": engine("native", folder),
        "optimum": engine("optimum", folder),
    }
    return {name: [run(e, prompt, c) for prompt, c in CASES] for name, e in loaded.items()}


def run(engine: Engine, prompt: str, constraint: Constraint | None, **params: Any) -> Result:
    result = engine.complete(Request(prompt=prompt, params=GREEDY.with_(constraint=constraint, **params)))
    return result.token_ids[0], result.text, result.finish_reasons[0]


@pytest.mark.parametrize("other", ["native", "optimum"])
def test_constrained_greedy_is_identical_on_every_engine(outputs: dict[str, list[Result]], other: str) -> None:
    for (prompt, constraint), mine, theirs in zip(CASES, outputs[other], outputs["genai"], strict=True):
        assert mine == theirs, f"{constraint.kind} for {prompt!r}: {other} {mine[1]!r} != genai {theirs[1]!r}"


def test_constrained_answers_are_valid(outputs: dict[str, list[Result]]) -> None:
    for (prompt, constraint), (_, text, reason) in zip(CASES, outputs["genai"], strict=True):
        assert reason == "stop", f"{prompt!r} did not finish: {text!r}"
        if constraint.kind == "json_schema":
            jsonschema.validate(json.loads(text), constraint.schema)
        elif constraint.kind == "json_object":
            assert isinstance(json.loads(text), dict)
        elif constraint.kind == "choice":
            assert text in constraint.choices
        elif constraint.kind == "grammar":
            assert re.fullmatch(COLOURS, text), text
        else:
            assert constraint.pattern is not None
            assert re.fullmatch(constraint.pattern, text)


@pytest.fixture(scope="module")
def batching(default_model: PreparedModel) -> Iterator[Engine]:
    engine = load_engine("genai", default_model, EngineOptions(ov_config=dict(F32), batching=True))
    yield engine
    engine.close()


def test_continuous_batching_enforces_the_same(
    batching: Engine, engine: Callable[..., Engine], default_model: PreparedModel
) -> None:
    """The server's ContinuousBatchingPipeline against LLMPipeline with the same (paged) attention."""
    single = engine("genai", default_model.path)
    for prompt, constraint in CASES:
        assert run(batching, prompt, constraint) == run(single, prompt, constraint), constraint.kind


@pytest.mark.parametrize("name", ["genai", "native", "optimum"])
def test_length_ends_an_unfinished_constraint(
    name: str, engine: Callable[..., Engine], default_model: PreparedModel
) -> None:
    ids, text, reason = run(engine(name, default_model.path, **(SDPA if name == "genai" else {})),
                            "Output JSON now.\n", Constraint("json_schema", schema=PET), max_new_tokens=6)
    assert reason == "length" and len(ids) == 6 and text.startswith('{"')


def test_unconstrained_request_is_unchanged(engine: Callable[..., Engine], default_model: PreparedModel) -> None:
    """No constraint: same ids on every engine and special tokens still left out of the text."""
    prompt = "Tell me about the moon.\n"
    results = [run(engine(n, default_model.path, **(SDPA if n == "genai" else {})), prompt, None, max_new_tokens=24)
               for n in ("genai", "native", "optimum")]
    assert results[0] == results[1] == results[2]
    assert "<|" not in results[0][1]


@pytest.mark.parametrize("name", ["native", "optimum"])
def test_top_logprobs(name: str, engine: Callable[..., Engine], default_model: PreparedModel) -> None:
    e = engine(name, default_model.path)
    params = GREEDY.with_(max_new_tokens=12, logprobs=1, top_logprobs=5)
    chunks = [c for c in e.generate(Request(prompt="Kittens are", params=params)) if c.token_ids]
    assert len(chunks) == 12
    for chunk in chunks:
        assert chunk.top_logprobs is not None and chunk.logprobs is not None
        (top,) = chunk.top_logprobs
        values = [v for _, v in top]
        assert len(top) == 5 and values == sorted(values, reverse=True) and all(v <= 0 for v in values)
        assert top[0][0] == chunk.token_ids[0]  # greedy: the chosen token is the most likely
        assert chunk.logprobs[0] == pytest.approx(top[0][1], abs=1e-5)


def test_top_logprobs_agree_between_native_and_optimum(engine: Callable[..., Engine], default_model: PreparedModel) -> None:
    params = GREEDY.with_(max_new_tokens=8, top_logprobs=3)
    tops = []
    for name in ("native", "optimum"):
        chunks = engine(name, default_model.path).generate(Request(prompt="Rainbows have", params=params))
        tops.append([c.top_logprobs[0] for c in chunks if c.top_logprobs])
    for mine, theirs in zip(*tops, strict=True):
        assert [t for t, _ in mine] == [t for t, _ in theirs]
        assert [v for _, v in mine] == pytest.approx([v for _, v in theirs], abs=1e-3)


@pytest.mark.parametrize(("name", "changes", "param", "words"), [
    ("genai", {"top_logprobs": 2}, "top_logprobs", "--engine native"),
    ("genai", {"logprobs": 1}, "logprobs", "--engine native"),
    ("native", {"num_beams": 2, "top_logprobs": 2}, "top_logprobs", "beam search"),
    ("optimum", {"num_beams": 2, "logprobs": 1}, "logprobs", "beam search"),
])
def test_logprobs_an_engine_cannot_return_are_refused(
    name: str, changes: dict[str, Any], param: str, words: str, engine: Callable[..., Engine],
    default_model: PreparedModel,
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        engine(name, default_model.path).generate(Request(prompt="x", params=GenerationParams(**changes)))
    assert caught.value.param == param and words in caught.value.message


README_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
                 "required": ["city", "country"]}


def test_python_api_as_the_readme_shows(default_model: PreparedModel) -> None:
    with vinolm.load(str(default_model.path), ov_config=F32) as m:
        jsonschema.validate(json.loads(m.generate("Where is the Eiffel Tower?", json_schema=README_SCHEMA)),
                            README_SCHEMA)
        assert isinstance(json.loads(m.generate("Encode this as JSON: name Bob, age 30.\n", json_object=True)), dict)
        assert m.generate("The capital of France is", choices=["Paris", "London", "Rome"]) in ("Paris", "London", "Rome")
        assert re.fullmatch(r"[A-Z]{3}-[0-9]{4}", m.instruct("A product code:", regex=r"[A-Z]{3}-[0-9]{4}").text())
        chat = m.chat(system="You are a helpful assistant.")
        assert chat.send("Answer yes or no: is water wet?", choices=["yes", "no"]).text() in ("yes", "no")
        assert chat.history[-1].content in ("yes", "no")


def test_cli_as_the_readme_shows(vinolm: Callable[..., Any], default_model: PreparedModel, tmp_path: Any) -> None:
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(README_SCHEMA), encoding="utf-8")
    common = ["--model", str(default_model.path), "--greedy", "--ov-config", "INFERENCE_PRECISION_HINT=f32"]
    done = vinolm("generate", "Where is the Eiffel Tower?", "--json-schema", str(schema), *common)
    assert done.returncode == 0, done.stderr
    jsonschema.validate(json.loads(done.stdout), README_SCHEMA)
    done = vinolm("generate", "Encode this as JSON: name Bob, age 30.", "--format", "json", *common)
    assert done.returncode == 0 and isinstance(json.loads(done.stdout), dict), done.stderr
    done = vinolm("instruct", "Is Paris in France?", "--choice", "yes", "--choice", "no", *common)
    assert done.returncode == 0 and done.stdout.strip() in ("yes", "no"), done.stderr
    done = vinolm("generate", "A product code", "--regex", "[A-Z]{3}-[0-9]{4}", *common)
    assert done.returncode == 0 and re.fullmatch("[A-Z]{3}-[0-9]{4}", done.stdout.strip()), done.stderr


WEATHER = Tool("get_weather", "The current weather in a city.",
               {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}}, "required": ["city"]})
TIME = Tool("get_time", "The current time in a time zone.",
            {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 30}}, "required": ["zone"]})
#: (system, question). Each system prompt opens with its own words: the native engine reuses
#: the KV state of a common prefix, and with one system prompt (tools included) for both,
#: the sea question parted from genai at a near-tie (measured; alone, it agreed).
AUTO_QUESTIONS = [("Weather desk.", "What is the weather like in Paris right now?"),
                  ("Poetry corner.", "Write one sentence about the sea.")]


def auto_request(system: str, question: str) -> Request:
    """tool_choice auto as the server sends it: tools on the system message, a tool_calls constraint."""
    messages = [Message("system", system, tools=[WEATHER, TIME]), Message("user", question)]
    return Request(messages=messages, params=GREEDY.with_(max_new_tokens=60,
                                                          constraint=auto_constraint([WEATHER, TIME], "hermes", True)))


#: The 135M model answers both chat questions in prose; few-shot, it writes a call (one: not parallel).
FEW_SHOT = ('Calls to tools, one per request.\nRequest: weather in Rome\nAnswer: <tool_call>\n'
            '{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>\nRequest: time in Tokyo\n'
            'Answer: <tool_call>\n{"name": "get_time", "arguments": {"zone": "Asia/Tokyo"}}\n</tool_call>\n'
            'Request: weather in Oslo\nAnswer:')


def test_auto_tool_choice_is_identical_on_every_engine(engine: Callable[..., Engine],
                                                       default_model: PreparedModel) -> None:
    """Free text or a call held to the offered tools, the same greedy tokens everywhere;
    a call the model wrote parses as the server reads it and its arguments validate."""
    loaded = [engine("genai", default_model.path, **SDPA), engine("native", default_model.path),
              engine("optimum", default_model.path)]
    one_call = GREEDY.with_(max_new_tokens=60, constraint=auto_constraint([WEATHER, TIME], "hermes", False))
    requests = [*(auto_request(s, q) for s, q in AUTO_QUESTIONS), Request(prompt=FEW_SHOT, params=one_call)]
    texts = []
    for request in requests:
        answers = [(r.token_ids[0], r.text, r.finish_reasons[0]) for r in (e.complete(request) for e in loaded)]
        assert answers[1] == answers[0] and answers[2] == answers[0], [a[1] for a in answers]
        texts.append(answers[0][1])
    assert HERMES_OPEN not in texts[0] + texts[1]  # prose, as the model chose
    assert answers[0][2] == "stop"  # one call, then the grammar allows only the end
    parser = CallParser("hermes", ["get_weather", "get_time"])
    parsed = parser.feed(texts[2])
    calls = parsed.calls + parser.finish().calls
    assert [name for name, _ in calls] == ["get_weather"], texts[2]
    jsonschema.validate(json.loads(calls[0][1]), WEATHER.parameters)


#: Few-shot prompts that lead the 135M model into a call in each family's own format (a
#: Llama 3 call is the whole answer, so its answers start on a new line, not after a space).
FORMAT_FEW_SHOT = {
    "mistral": ('Calls to tools.\nRequest: weather in Rome\nAnswer: [TOOL_CALLS][{"name": "get_weather", '
                '"arguments": {"city": "Rome"}}]\nRequest: time in Tokyo\nAnswer: [TOOL_CALLS][{"name": '
                '"get_time", "arguments": {"zone": "Asia/Tokyo"}}]\nRequest: weather in Oslo\nAnswer:'),
    "llama3_json": ('Calls to tools.\nRequest: weather in Rome\nAnswer:\n{"name": "get_weather", "parameters": '
                    '{"city": "Rome"}}\nRequest: time in Tokyo\nAnswer:\n{"name": "get_time", "parameters": '
                    '{"zone": "Asia/Tokyo"}}\nRequest: weather in Oslo\nAnswer:\n'),
}


@pytest.mark.parametrize("fmt", sorted(FORMAT_FEW_SHOT))
def test_auto_tool_grammars_of_other_families_are_identical_on_every_engine(
    fmt: str, engine: Callable[..., Engine], default_model: PreparedModel
) -> None:
    """Mistral's triggered ``[TOOL_CALLS]`` grammar and Llama 3's call-or-text grammar, on a
    prompt answered in prose and one answered with a call: the same greedy tokens on genai
    (xgrammar) as on native and optimum (llguidance), and the call parses as the server reads it."""
    loaded = [engine("genai", default_model.path, **SDPA), engine("native", default_model.path),
              engine("optimum", default_model.path)]
    params = GREEDY.with_(max_new_tokens=40, constraint=auto_constraint([WEATHER, TIME], fmt, False))
    texts = []
    for prompt in ("Sea poem. Write one sentence about the sea.\n", FORMAT_FEW_SHOT[fmt]):
        request = Request(prompt=prompt, params=params)
        answers = [(r.token_ids[0], r.text, r.finish_reasons[0]) for r in (e.complete(request) for e in loaded)]
        assert answers[1] == answers[0] and answers[2] == answers[0], [a[1] for a in answers]
        texts.append(answers[0][1])
    parser = CallParser(fmt, ["get_weather", "get_time"])
    prose = parser.feed(texts[0]).content + parser.finish().content
    assert prose == texts[0] and "{" not in texts[0][:1], texts[0]  # free text, as the model chose
    parser = CallParser(fmt, ["get_weather", "get_time"])
    parsed = parser.feed(texts[1])
    calls = parsed.calls + parser.finish().calls
    assert [name for name, _ in calls] == ["get_weather"], texts[1]
    jsonschema.validate(json.loads(calls[0][1]), WEATHER.parameters)


#: Strings that need JSON escapes: a quote, a backslash, a newline, a tab and a non-ASCII letter.
ESCAPES = {"type": "object", "properties": {
    "quote": {"const": 'She said "hi"\\ \n\t é'},
    "path": {"type": "string", "maxLength": 40},
}, "required": ["quote", "path"]}
#: Few-shot: the model copies the pattern and writes Windows paths, each backslash escaped.
PATHS = ('Folders as JSON.\nFolder: C:\\temp\nJSON: {"quote": "x", "path": "C:\\\\temp"}\n'
         'Folder: D:\\games\\chess\nJSON: {"quote": "x", "path": "D:\\\\games\\\\chess"}\n'
         'Folder: C:\\users\\bob\nJSON: ')


def test_json_string_escapes_are_identical_on_every_engine(engine: Callable[..., Engine],
                                                           default_model: PreparedModel) -> None:
    """The escapes a schema's literal forces (``const``) and those the model writes in a free
    string (the paths' backslashes): genai's xgrammar reads vinolm's GBNF escapes as llguidance does."""
    loaded = [engine("genai", default_model.path, **SDPA), engine("native", default_model.path),
              engine("optimum", default_model.path)]
    request = Request(prompt=PATHS, params=GREEDY.with_(max_new_tokens=60,
                                                        constraint=Constraint("json_schema", schema=ESCAPES)))
    answers = [(r.token_ids[0], r.text, r.finish_reasons[0]) for r in (e.complete(request) for e in loaded)]
    assert answers[1] == answers[0] and answers[2] == answers[0], [a[1] for a in answers]
    text, reason = answers[0][1], answers[0][2]
    assert reason == "stop", text
    value = json.loads(text)
    jsonschema.validate(value, ESCAPES)
    assert "\\" in value["path"], text  # the model wrote escapes of its own
