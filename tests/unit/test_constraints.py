"""Constraints without a model: compiling, caching, bad input, and the token mask on a
toy vocabulary where each token is one byte (so a text is accepted exactly when each of
its bytes was allowed in turn and the stop token is allowed at the end)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import numpy as np
import pytest

from vinolm.chat.session import with_constraint
from vinolm.cli import main
from vinolm.engines.constraints import (
    CompiledConstraint,
    GrammarVocabulary,
    TokenMask,
    check_params,
    compile_constraint,
)
from vinolm.engines.json_grammar import schema_grammar, trigger_free_text
from vinolm.errors import InvalidRequest
from vinolm.prompts.tools import auto_constraint, calls_schema
from vinolm.types import Constraint, GenerationParams, Tool

STOP = 256
PET = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "kind": {"enum": ["cat", "dog"]},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2},
        "owner": {"$ref": "#/$defs/owner"},
    },
    "required": ["name", "kind"],
    "$defs": {"owner": {"type": "object", "properties": {"age": {"type": "integer"}, "vip": {"type": "boolean"}},
                        "required": ["age"]}},
}

WEATHER = Tool("get_weather", "", {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
TIME = Tool("get_time", "", {"type": "object", "properties": {}})


@pytest.fixture(scope="module")
def vocabulary() -> GrammarVocabulary:
    tokens = [bytes([i]) for i in range(256)] + [b""]  # id 256: the empty (special) stop token
    return GrammarVocabulary(tokens, STOP, lambda text: list(text.encode("utf-8")))


def accepts(vocabulary: GrammarVocabulary, constraint: Constraint, text: str) -> bool:
    mask = TokenMask(vocabulary, compile_constraint(constraint), {STOP}, STOP + 1)
    for byte in text.encode("utf-8"):
        if not mask.allowed()[byte]:
            return False
        mask.accept(byte)
    return bool(mask.allowed()[STOP])


@pytest.mark.parametrize("text", [
    '{"name": "Rex", "kind": "dog"}',
    '{"name": "Mia", "kind": "cat", "tags": ["small"], "owner": {"age": 7}}',
    '{"name": "", "kind": "cat", "owner": {"age": -12, "vip": true}}',
    '{"name": "a\\"b\\u00e9", "kind": "dog", "tags": ["x", "y"]}',
])
def test_schema_grammar_accepts_valid_canonical_json(vocabulary: GrammarVocabulary, text: str) -> None:
    jsonschema.validate(json.loads(text), PET)
    assert accepts(vocabulary, Constraint("json_schema", schema=PET), text)


@pytest.mark.parametrize(("text", "why"), [
    ('{"kind": "dog", "name": "Rex"}', "properties come in the schema's order"),
    ('{"name": "Rex"}', "kind is required"),
    ('{"name": "Rex", "kind": "bird"}', "not in the enum"),
    ('{"name": "Rex", "kind": "dog", "tags": []}', "minItems 1"),
    ('{"name": "Rex", "kind": "dog", "tags": ["a", "b", "c"]}', "maxItems 2"),
    ('{"name": "Rexxxxxxxxxxxx", "kind": "dog"}', "maxLength 12"),
    ('{"name": "Rex", "kind": "dog", "owner": {"age": 1.5}}', "age is an integer"),
    ('{"name": "Rex", "kind": "dog", "color": "red"}', "no other properties"),
    ('{"name":"Rex", "kind": "dog"}', "one layout: ': ' and ', '"),
    ('{"name": "Rex", "kind": "dog"} ', "nothing after the object"),
])
def test_schema_grammar_refuses(vocabulary: GrammarVocabulary, text: str, why: str) -> None:
    assert not accepts(vocabulary, Constraint("json_schema", schema=PET), text), why


def test_recursion_through_an_object_or_array_is_kept(vocabulary: GrammarVocabulary) -> None:
    """Only a reference back to itself with nothing in between has no JSON text; a linked list has."""
    node = {"$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}}}},
            "$ref": "#/$defs/node"}
    assert accepts(vocabulary, Constraint("json_schema", schema=node), '{"next": {"next": {}}}')
    nested = Constraint("json_schema", schema={"type": "array", "items": {"$ref": "#"}})
    assert accepts(vocabulary, nested, "[[], [[]]]") and not accepts(vocabulary, nested, "[1]")


def test_json_object_is_any_object_in_the_layout(vocabulary: GrammarVocabulary) -> None:
    any_object = Constraint("json_object")
    assert accepts(vocabulary, any_object, '{"a": [1, 2.5e3, null, {"b": false}], "c": "d"}')
    assert accepts(vocabulary, any_object, "{}")
    assert not accepts(vocabulary, any_object, "[1, 2]")
    assert not accepts(vocabulary, any_object, '{"a": 01}')


def test_regex_choice_and_grammar(vocabulary: GrammarVocabulary) -> None:
    regex = Constraint("regex", pattern=r"\d{3}-[a-z]+")
    assert accepts(vocabulary, regex, "123-abc")
    assert not accepts(vocabulary, regex, "12-abc")
    assert not accepts(vocabulary, regex, "١٢٣-abc")  # \d is ASCII, as in xgrammar
    choice = Constraint("choice", choices=("yes", 'no "way"\n'))
    assert accepts(vocabulary, choice, 'no "way"\n')
    assert not accepts(vocabulary, choice, "ye")
    grammar = Constraint("grammar", grammar='root ::= "(" item ("," item)* ")"\nitem ::= [a-c]+\n')
    assert accepts(vocabulary, grammar, "(ab,c)")
    assert not accepts(vocabulary, grammar, "(ab,)")


def test_a_grammar_is_context_free_not_lexed_greedily(vocabulary: GrammarVocabulary) -> None:
    """xgrammar's reading: ``word`` may stop before a "b" that it could also take."""
    grammar = Constraint("grammar", grammar='root ::= word "b"\nword ::= [a-z]+\n')
    assert accepts(vocabulary, grammar, "aab")
    assert not accepts(vocabulary, grammar, "aa")


def test_stop_token_only_where_the_grammar_accepts(vocabulary: GrammarVocabulary) -> None:
    mask = TokenMask(vocabulary, compile_constraint(Constraint("choice", choices=("a", "ab"))), {STOP}, STOP + 1)
    assert not mask.allowed()[STOP]
    assert np.flatnonzero(mask.allowed()).tolist() == [ord("a")]
    mask.accept(ord("a"))
    assert np.flatnonzero(mask.allowed()).tolist() == [ord("b"), STOP]
    mask.accept(ord("b"))
    assert np.flatnonzero(mask.allowed()).tolist() == [STOP]
    logits = np.zeros(STOP + 1, dtype=np.float32)
    assert np.isneginf(mask.apply(logits)[:STOP]).all() and mask.apply(logits)[STOP] == 0


def test_padded_logits_never_allow_ids_past_the_vocabulary(vocabulary: GrammarVocabulary) -> None:
    mask = TokenMask(vocabulary, compile_constraint(Constraint("json_object")), {STOP}, STOP + 64)
    allowed = mask.allowed()
    assert allowed.shape == (STOP + 64,) and not allowed[STOP + 1 :].any()


def test_compiled_once_per_constraint() -> None:
    first = compile_constraint(Constraint("json_schema", schema=dict(PET)))
    assert compile_constraint(Constraint("json_schema", schema=json.loads(json.dumps(PET)))) is first
    reordered = {**PET, "properties": dict(reversed(list(PET["properties"].items())))}
    assert compile_constraint(Constraint("json_schema", schema=reordered)) is not first  # order matters
    assert isinstance(first, CompiledConstraint) and first.gbnf is not None and first.regex is None


def test_one_grammar_text_for_both_libraries() -> None:
    compiled = compile_constraint(Constraint("json_schema", schema=PET))
    assert compiled.gbnf == schema_grammar(PET)
    assert compiled.gbnf.startswith("root ::= ")
    assert compile_constraint(Constraint("regex", pattern="a+")).regex == "a+"


def _nested(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels - 1):
        schema = {"type": "array", "items": schema}
    return schema


def test_a_schema_as_deep_as_allowed_compiles_and_a_deeper_one_is_a_400_not_a_recursion_error() -> None:
    assert compile_constraint(Constraint("json_schema", schema=_nested(100))).gbnf
    for levels in (101, 2000):
        with pytest.raises(InvalidRequest, match="nests deeper than 100 levels"):
            compile_constraint(Constraint("json_schema", schema=_nested(levels)))


@pytest.mark.parametrize(("constraint", "param", "words"), [
    (Constraint("json_schema", schema={"type": "strin"}), "json_schema", "invalid at type"),
    (Constraint("json_schema", schema={"type": "string", "pattern": "^a"}), "json_schema", "'pattern'"),
    (Constraint("json_schema", schema={"type": "integer", "minimum": 3}), "json_schema", "'minimum'"),
    (Constraint("json_schema", schema={"$ref": "#/$defs/nothing"}), "json_schema", "points to nothing"),
    (Constraint("json_schema", schema={"$ref": "https://example.com/s.json"}), "json_schema", "same schema"),
    (Constraint("json_schema", schema={"$ref": "#"}), "json_schema", "refers back to itself"),
    (Constraint("json_schema", schema={"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}},
                                       "$ref": "#/$defs/a"}), "json_schema", "refers back to itself"),
    (Constraint("json_schema", schema={"enum": []}), "json_schema", "empty enum"),
    (Constraint("json_schema", schema={"type": "string", "minLength": 10**12}), "json_schema",
     "minLength at # is 1000000000000; vinolm enforces bounds up to 100000"),
    (Constraint("json_schema", schema={"type": "object", "properties": {"a": {}}, "required": ["b"]}),
     "json_schema", "'b'"),
    (Constraint("json_schema", schema={"enum": [float("nan")]}), "json_schema", "not plain JSON"),
    (Constraint("json_schema", schema={"const": {1, 2}}), "json_schema", "not plain JSON"),
    (Constraint("regex", pattern="[a-"), "regex", "unclosed character class"),
    (Constraint("regex", pattern=r"\p{L}+"), "regex", "Unicode property classes"),
    (Constraint("regex", pattern="(?i)abc"), "regex", "inline flags"),
    (Constraint("regex", pattern="[[:alpha:]]+"), "regex", "POSIX classes"),
    (Constraint("grammar", grammar='root ::= item\n'), "grammar", "'item' not found"),
    (Constraint("grammar", grammar='item ::= "a"\n'), "grammar", "root"),
    (Constraint("grammar", grammar='root ::= "a\n'), "grammar", "does not compile"),
    (Constraint("grammar", grammar='root ::= [a-z]{0}\n'), "grammar", "does not compile: End number in range"),
    # llguidance reads these; xgrammar (genai's) refuses them inside a batch step
    (Constraint("grammar", grammar='root ::= \n'), "grammar", "empty alternative (nothing after '::=')"),
    (Constraint("grammar", grammar='root ::= "a" | \n'), "grammar", "empty alternative (nothing after '|')"),
    (Constraint("grammar", grammar='root ::= "a" ( | "b")\n'), "grammar", "empty alternative (nothing after '(')"),
    (Constraint("grammar", grammar='root ::= x |\nx ::= "a"\n'), "grammar", "rule 'root' has an empty alternative"),
    (Constraint("grammar", grammar='root ::= "a"\nroot ::= "b"\n'), "grammar", "defined twice"),
    (Constraint("grammar", grammar='root ::= "a" .\n'), "grammar", "'.' (any character)"),
    (Constraint("grammar", grammar='root ::= "a"{3,1}\n'), "grammar", "{3,1}"),
    (Constraint("grammar", grammar='root ::= root\n'), "grammar", "accepts no text: rule(s) 'root' can never finish"),
    (Constraint("regex", pattern="a\ud800"), "regex", "lone UTF-16 surrogate"),
    (Constraint("choice", choices=["a", "b\ud800"]), "choice", "lone UTF-16 surrogate"),
    (Constraint("json_schema", schema={"enum": ["\ud800"]}), "json_schema", "lone UTF-16 surrogate"),
    (Constraint("grammar", grammar='root ::= x\nx ::= "a" x\n'), "grammar", "rule(s) 'root', 'x' can never finish"),
    (Constraint("grammar", grammar='root ::= [a-z]+ root\n'), "grammar", "accepts no text"),
])
def test_bad_constraints_name_their_field(constraint: Constraint, param: str, words: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        compile_constraint(constraint)
    assert caught.value.param == param
    assert words in caught.value.message
    assert "Traceback" not in caught.value.message and "\n" not in caught.value.message


@pytest.mark.parametrize(("changes", "param"), [
    ({"num_beams": 2}, "num_beams"),
    ({"ignore_eos": True}, "ignore_eos"),
])
def test_what_a_constraint_cannot_go_with(changes: dict[str, Any], param: str) -> None:
    params = GenerationParams(constraint=Constraint("json_object"), **changes)
    with pytest.raises(InvalidRequest) as caught:
        check_params(params)
    assert caught.value.param == param


def test_several_sequences_only_where_each_has_its_grammar_state() -> None:
    """native and optimum keep a TokenMask per row; genai shares one matcher between the
    sequences it forks (measured: n=3 gave broken JSON), so it refuses."""
    params = GenerationParams(constraint=Constraint("json_object"), temperature=1.0, num_return_sequences=2)
    assert check_params(params) is not None
    with pytest.raises(InvalidRequest) as caught:
        check_params(params, sequences=False)
    assert caught.value.param == "num_return_sequences" and "--engine native" in caught.value.message


def test_a_finished_row_takes_padding(vocabulary: GrammarVocabulary) -> None:
    """In a transformers batch a row that stopped keeps receiving pad tokens: not output."""
    mask = TokenMask(vocabulary, compile_constraint(Constraint("choice", choices=("a",))), {STOP}, STOP + 1)
    mask.accept(ord("a"))
    mask.accept(STOP)
    mask.accept(0)  # the pad id here: outside the grammar, and ignored
    assert mask.allowed()[STOP]


@pytest.mark.parametrize(("low", "high", "good", "bad"), [
    (1, 1, ["[1]"], ["[]", "[1, 2]"]),
    (0, 1, ["[]", "[1]"], ["[1, 2]"]),
    (3, 3, ["[1, 2, 3]"], ["[1, 2]", "[1, 2, 3, 4]"]),
    (0, 0, ["[]"], ["[1]"]),
])
def test_equal_or_zero_item_bounds(vocabulary: GrammarVocabulary, low: int, high: int, good: list[str],
                                   bad: list[str]) -> None:
    """minItems == maxItems once gave ``{0,0}``, which llguidance refuses to compile."""
    schema = {"type": "array", "items": {"type": "integer"}, "minItems": low, "maxItems": high}
    assert "{0,0}" not in schema_grammar(schema)
    for text in good:
        assert accepts(vocabulary, Constraint("json_schema", schema=schema), text), text
    for text in bad:
        assert not accepts(vocabulary, Constraint("json_schema", schema=schema), text), text


def test_equal_or_zero_length_bounds(vocabulary: GrammarVocabulary) -> None:
    empty = Constraint("json_schema", schema={"type": "string", "maxLength": 0})
    assert accepts(vocabulary, empty, '""') and not accepts(vocabulary, empty, '"a"')
    three = Constraint("json_schema", schema={"type": "string", "minLength": 3, "maxLength": 3})
    assert accepts(vocabulary, three, '"abc"') and not accepts(vocabulary, three, '"ab"')
    with pytest.raises(InvalidRequest, match="maxLength"):
        compile_constraint(Constraint("json_schema", schema={"type": "string", "minLength": 3, "maxLength": 2}))


def test_any_of_objects_of_scalars_and_not(vocabulary: GrammarVocabulary) -> None:
    """Two alternatives that share a prefix: an object of scalars only (once one llguidance
    lexeme) and one with a nested object; llguidance used to follow the first and refuse
    the second past the shared ``{"name": "get_``."""
    calls = calls_schema([WEATHER, TIME], parallel=False)
    constraint = Constraint("json_schema", schema=calls)
    assert accepts(vocabulary, constraint, '{"name": "get_time", "arguments": {}}')
    assert accepts(vocabulary, constraint, '{"name": "get_weather", "arguments": {"city": "Oslo"}}')


def test_unconstrained_params_compile_nothing() -> None:
    assert check_params(GenerationParams(num_beams=2, ignore_eos=True)) is None


def test_keyword_shortcuts_make_one_constraint() -> None:
    assert with_constraint({"json_object": True, "max_new_tokens": 9}) == {
        "max_new_tokens": 9, "constraint": Constraint("json_object")}
    assert with_constraint({"choices": ["a", "b"]})["constraint"] == Constraint("choice", choices=("a", "b"))
    assert with_constraint({"regex": "x+"})["constraint"].pattern == "x+"
    assert with_constraint({"json_object": False}) == {}
    with pytest.raises(InvalidRequest, match="one constraint"):
        with_constraint({"regex": "a", "json_schema": {"type": "object"}})


@pytest.mark.parametrize(("flags", "words"), [
    (["--json-schema", "/nonexistent/schema.json"], "No such file"),
    (["--grammar", "/nonexistent/g.gbnf"], "No such file"),
    (["--regex", "(unclosed"], "regex does not compile"),
])
def test_cli_bad_constraint_is_one_line_and_exit_2(
    flags: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["generate", "hello", "--model", "/nonexistent-model", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1


def test_cli_schema_file_that_is_not_json(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "schema.json"
    bad.write_text("{not json", encoding="utf-8")
    assert main(["generate", "hello", "--json-schema", str(bad)]) == 2
    assert "is not JSON" in capsys.readouterr().err


# -- tool_choice auto: free text, or valid calls in the family's format ----------------------------
WEATHER_CALL = '{"name": "get_weather", "arguments": {"city": "Oslo"}}'
TIME_CALL = '{"name": "get_time", "arguments": {}}'


def hermes(*calls: str) -> str:
    return "\n".join(f"<tool_call>\n{call}\n</tool_call>" for call in calls)


@pytest.mark.parametrize(("fmt", "parallel", "text", "ok"), [
    ("hermes", True, "", True),
    ("hermes", True, "It is sunny.\nAsk me <anything> or a < b <tool_cal", True),
    ("hermes", True, hermes(WEATHER_CALL), True),
    ("hermes", True, "Let me check. " + hermes(WEATHER_CALL, TIME_CALL), True),
    ("hermes", True, "<<tool_call>\n" + TIME_CALL + "\n</tool_call>", True),
    ("hermes", True, hermes(WEATHER_CALL, TIME_CALL, TIME_CALL), False),  # at most one call per tool
    ("hermes", False, hermes(WEATHER_CALL, TIME_CALL), False),  # parallel_tool_calls false
    ("hermes", True, hermes(WEATHER_CALL) + " and more text", False),
    ("hermes", True, "<tool_call>", False),
    ("hermes", True, "<tool_call> here is the tag as text", False),
    ("hermes", True, hermes('{"name": "get_weather", "arguments": {}}'), False),  # city is required
    ("hermes", True, hermes('{"name": "launch", "arguments": {}}'), False),
    ("hermes", True, "<tool_call>" + WEATHER_CALL + "</tool_call>", False),  # the format's newlines
    ("mistral", True, "Sure [TOOL_CALLS][" + WEATHER_CALL + ", " + TIME_CALL + "]", True),
    ("mistral", True, "[TOOLS] and [TOOL_CALL", True),
    ("mistral", True, "[TOOL_CALLS]" + WEATHER_CALL, False),
    ("llama3_json", True, ('{"name": "get_time", "parameters": {}}; {"name": "get_weather", "parameters": '
                           '{"city": "Oslo"}}'), True),
    ("llama3_json", True, "No call needed: {braces} are fine inside.", True),
    ("llama3_json", True, TIME_CALL, False),  # Llama 3 writes "parameters"
    ("llama3_json", True, '{"text": "not a call"}', False),
    ("llama3_json", True, '  {"name": "get_time", "parameters": {}}', False),
])
def test_auto_allows_free_text_or_valid_calls(vocabulary: GrammarVocabulary, fmt: str, parallel: bool,
                                             text: str, ok: bool) -> None:
    assert accepts(vocabulary, auto_constraint([WEATHER, TIME], fmt, parallel), text) is ok


def test_free_text_never_spells_the_trigger() -> None:
    """The GBNF expression against Python's ``in`` on every short text over the trigger's
    own characters (and one other), read by llguidance as a plain context-free grammar."""
    import itertools

    import llguidance

    trigger = "<ab>"
    matcher_of = llguidance.LLMatcher.grammar_from_lark
    gbnf = f"root ::= {trigger_free_text(trigger)}\n"
    from vinolm.engines.constraints import _lark

    grammar = matcher_of(_lark(gbnf, lexemes=False))
    tokens = [bytes([i]) for i in range(256)] + [b""]
    vocabulary = GrammarVocabulary(tokens, STOP, lambda text: list(text.encode("utf-8")))
    compiled = CompiledConstraint("grammar", gbnf, None, grammar)
    for size in range(7):
        for letters in itertools.product("<ab>x", repeat=size):
            text = "".join(letters)
            mask = TokenMask(vocabulary, compiled, {STOP}, STOP + 1)
            fits = True
            for byte in text.encode():
                if not mask.allowed()[byte]:
                    fits = False
                    break
                mask.accept(byte)
            fits = fits and bool(mask.allowed()[STOP])
            assert fits is (trigger not in text), text


def test_a_trigger_whose_first_character_repeats_is_refused() -> None:
    with pytest.raises(ValueError, match="must not repeat"):
        trigger_free_text("<a<")


def test_auto_constraint_compiles_for_every_family() -> None:
    for fmt in ("hermes", "mistral", "llama3_json"):
        compiled = compile_constraint(auto_constraint([WEATHER, TIME], fmt, parallel=True))
        assert compiled.kind == "tool_calls" and compiled.gbnf is not None and compiled.gbnf.startswith("root ::= free")
    with pytest.raises(InvalidRequest, match="unknown tool format"):
        compile_constraint(Constraint("tool_calls", schema={"type": "object"}, tool_format="pythonic"))


@pytest.mark.parametrize("grammar", ['root ::= "a" | ""', 'root ::= "a" ( "|" | [|(] )', 'root ::= ( ) "a"',
                                     'root ::= "a"{1,3} # not | an alternative', 'root ::= x\nx ::= "a"{2,}',
                                     'root ::= x\nx ::= "a" x | "b"', 'root ::= ( "(" root ")" | "x" )',
                                     'root ::= x{0,3} "a"\nx ::= x'])
def test_what_looks_like_an_empty_alternative_but_is_not(grammar: str) -> None:
    assert compile_constraint(Constraint("grammar", grammar=grammar + "\n")).gbnf == grammar + "\n"
