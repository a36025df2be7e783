"""JSON schema -> GBNF in vinolm's one JSON layout, the grammar text both xgrammar (genai)
and llguidance (native, optimum) read, so every engine enforces the same language.

The layout is what ``json.dumps`` writes by default: ``{"a": 1, "b": [true, null]}``,
", " and ": " separators, no other whitespace, properties in the schema's order. No OpenVINO
and no grammar library here; ``jsonschema`` checks the schema itself.
"""

from __future__ import annotations

import json
import re
from typing import Any

from vinolm.errors import InvalidRequest

#: Keywords that describe a schema without restricting it.
ANNOTATIONS = frozenset({
    "title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated",
    "readOnly", "writeOnly", "$defs", "definitions",
})
#: Keywords the grammar enforces; any other keyword is refused (never silently dropped).
SUPPORTED = frozenset({
    "type", "enum", "const", "properties", "required", "additionalProperties", "items",
    "minItems", "maxItems", "anyOf", "oneOf", "allOf", "$ref", "minLength", "maxLength",
})
#: Any JSON value in the canonical layout; schema rules refer to these names.
JSON_RULES = r'''value ::= object | array | string | number | "true" | "false" | "null"
object ::= "{" ( member ( ", " member )* )? "}"
member ::= string ": " value
array ::= "[" ( value ( ", " value )* )? "]"
string ::= "\"" char* "\""
char ::= [^"\\\x00-\x1f] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} )
integer ::= "-"? ( "0" | [1-9] [0-9]{0,15} )
number ::= integer ( "." [0-9]{1,15} )? ( [eE] [+-]? [0-9]{1,3} )?
'''


#: The rules of vinolm's grammars llguidance may lex as one lexeme (see :func:`is_lexeme`).
_LEXEMES = frozenset({"string", "char", "integer", "number", "free", "head"})


def is_lexeme(name: str) -> bool:
    """Whether llguidance may read rule ``name`` of a vinolm grammar as one lexeme.

    Its lexer ends a lexeme only where the lexeme cannot go on, and then forgets the
    other ways the text could have been read: with ``anyOf`` two objects, one all
    scalars (a single lexeme) and one not (starting with the ``{`` lexeme), it followed
    the first past ``{"name": "get_`` and refused ``time``. So only the leaves are lexemes:
    strings (``s1``, ... are the bounded ones), numbers, and the free text of a
    ``tool_calls`` grammar with its trigger; objects, arrays and keys stay grammar rules.
    """
    return name in _LEXEMES or re.fullmatch(r"s\d+", name) is not None


def gbnf_literal(text: str) -> str:
    """``text`` as a GBNF string literal (the escapes both xgrammar and llguidance read)."""
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 0x20:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _dumps(value: Any) -> str:
    """A JSON value in the canonical layout (what ``json.dumps`` writes by default)."""
    return json.dumps(value, ensure_ascii=False)


def schema_grammar(schema: Any) -> str:
    """GBNF for the JSON texts in vinolm's layout that ``schema`` accepts.

    The schema itself must be valid (meta-schema check). Objects with ``properties``
    get exactly those keys in that order - the required ones always, the others may be
    left out - and no others, whatever ``additionalProperties`` says (a subset of what
    the schema allows, so the answer still validates); an object without ``properties``
    takes any keys with values of ``additionalProperties``.
    """
    check_schema(schema)
    builder = _SchemaGrammar(schema)
    root = builder.value(schema, "#")
    reached, todo = set(), [root]
    while todo:  # only the rules the root reaches (optional members leave some unused)
        for name in re.findall(r"\b[rs]\d+\b", todo.pop()):
            if name not in reached and name in builder.rules:
                reached.add(name)
                todo.append(builder.rules[name])
    rules = [f"root ::= {root}"] + [f"{n} ::= {body}" for n, body in builder.rules.items() if n in reached]
    return "\n".join(rules) + "\n" + JSON_RULES


#: Deeper schemas are refused before anything walks them recursively (the meta-schema check and
#: the grammar builder both recurse: at ~150 levels Python's stack ran out, a 500).
MAX_SCHEMA_DEPTH = 100


def _depth(value: Any) -> int:
    """How many objects and arrays deep ``value`` nests, counted without recursion."""
    deepest, level = 0, [value]
    while level and deepest <= MAX_SCHEMA_DEPTH:
        level = [item for item in level if isinstance(item, dict | list)]
        deepest += bool(level)
        level = [v for item in level for v in (item.values() if isinstance(item, dict) else item)]
    return deepest


def check_depth(schema: Any) -> None:
    if _depth(schema) > MAX_SCHEMA_DEPTH:
        raise InvalidRequest(f"the JSON schema nests deeper than {MAX_SCHEMA_DEPTH} levels", param="json_schema")


def check_schema(schema: Any) -> None:
    """InvalidRequest (``json_schema``) for a schema the meta-schema refuses, or nested too deep."""
    import jsonschema

    if not isinstance(schema, dict):
        raise InvalidRequest("a JSON schema must be an object", param="json_schema")
    check_depth(schema)
    try:
        jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator).check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "the top level"
        raise InvalidRequest(f"the JSON schema is invalid at {where}: {exc.message[:200]}",
                             param="json_schema") from None


class _SchemaGrammar:
    """Walks a schema, writing one rule per object, array, string bound and $ref."""

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.rules: dict[str, str] = {}
        self._refs: dict[str, str] = {}
        #: References being resolved with no object or array entered since: met again, the
        #: schema asks for a value that is itself (no finite JSON text; the sampler then had
        #: no token but the end of text to offer).
        self._direct: set[str] = set()

    def _new_rule(self, body: str | None = None, prefix: str = "r") -> str:
        name = f"{prefix}{len(self.rules) + 1}"
        self.rules[name] = body or ""
        return name

    def value(self, schema: Any, path: str) -> str:
        if schema is True or schema == {}:
            return "value"
        if not isinstance(schema, dict):
            raise InvalidRequest(f"the JSON schema at {path} accepts nothing", param="json_schema")
        unknown = sorted(set(schema) - SUPPORTED - ANNOTATIONS)
        if unknown:
            raise InvalidRequest(
                f"JSON schema keyword {unknown[0]!r} (at {path}) is not supported; vinolm enforces "
                f"{', '.join(sorted(SUPPORTED))}", param="json_schema")
        keys = set(schema) - ANNOTATIONS
        for combinator in ("$ref", "anyOf", "oneOf", "allOf"):
            if combinator in schema:
                if keys - {combinator}:
                    raise InvalidRequest(
                        f"{combinator} at {path} cannot be combined with {', '.join(sorted(keys - {combinator}))}",
                        param="json_schema")
                return self._combinator(combinator, schema[combinator], path)
        if "const" in schema:
            return gbnf_literal(_dumps(schema["const"]))
        if "enum" in schema:
            if not schema["enum"]:
                raise InvalidRequest(f"the JSON schema at {path} has an empty enum: no value satisfies it",
                                     param="json_schema")
            return "( " + " | ".join(gbnf_literal(_dumps(v)) for v in schema["enum"]) + " )"
        kind = schema.get("type")
        if kind is None:
            return "value" if not keys else self._typed(_guess_type(schema, path), schema, path)
        if isinstance(kind, list):
            return "( " + " | ".join(self._typed(k, schema, path) for k in kind) + " )"
        return self._typed(kind, schema, path)

    def _combinator(self, name: str, argument: Any, path: str) -> str:
        if name == "$ref":
            return self._ref(argument, path)
        if name == "allOf":
            if len(argument) != 1:
                raise InvalidRequest(f"allOf at {path} must hold one schema (vinolm merges no schemas)",
                                     param="json_schema")
            return self.value(argument[0], f"{path}/allOf/0")
        parts = [self.value(sub, f"{path}/{name}/{i}") for i, sub in enumerate(argument)]
        return "( " + " | ".join(parts) + " )"

    def _ref(self, ref: str, path: str) -> str:
        if ref in self._direct:
            raise InvalidRequest(f"$ref {ref!r} at {path} refers back to itself before any object or array: "
                                 "no JSON value satisfies it", param="json_schema")
        if ref in self._refs:
            return self._refs[ref]
        if not ref.startswith("#"):
            raise InvalidRequest(f"$ref {ref!r} at {path}: only references into the same schema (#/...) "
                                 "are supported", param="json_schema")
        target: Any = self.root
        for part in [p for p in ref[1:].split("/") if p]:
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, dict) or part not in target:
                raise InvalidRequest(f"$ref {ref!r} at {path} points to nothing", param="json_schema")
            target = target[part]
        name = self._refs[ref] = self._new_rule()
        self._direct.add(ref)
        self.rules[name] = self.value(target, ref)
        self._direct.discard(ref)
        return name

    def _typed(self, kind: str, schema: dict[str, Any], path: str) -> str:
        if kind in ("object", "array"):  # a reference met inside one is recursion with a base
            direct, self._direct = self._direct, set()
            rule = self._object(schema, path) if kind == "object" else self._array(schema, path)
            self._direct = direct
            return rule
        if kind == "string":
            return self._string(schema, path)
        if kind in ("number", "integer"):
            return kind
        return {"boolean": '( "true" | "false" )', "null": '"null"'}[kind]

    def _object(self, schema: dict[str, Any], path: str) -> str:
        properties: dict[str, Any] = schema.get("properties") or {}
        required = list(schema.get("required", []))
        missing = [name for name in required if name not in properties]
        if missing and properties:
            raise InvalidRequest(f"required property {missing[0]!r} at {path} is not in properties",
                                 param="json_schema")
        if not properties:
            return self._map(schema.get("additionalProperties", True), required, path)
        members = [
            (gbnf_literal(_dumps(name) + ": ") + " " + self.value(sub, f"{path}/properties/{name}"),
             name in required)
            for name, sub in properties.items()
        ]
        # after[first]: the members from the current one on, ``first`` while none is written;
        # None where nothing is left (GBNF has no empty literal both libraries read).
        after: dict[bool, str | None] = {True: None, False: None}
        for member, needed in reversed(members):
            current: dict[bool, str | None] = {}
            for first in (True, False):
                written = " ".join(p for p in ("" if first else '", "', member, after[False]) if p)
                skip = after[first]
                body = written if needed else (f"{written} | {skip}" if skip else f"( {written} )?")
                current[first] = self._new_rule(body)
            after = current
        return self._new_rule(f'"{{" {after[True]} "}}"')

    def _map(self, values: Any, required: list[str], path: str) -> str:
        if required:
            raise InvalidRequest(f"required at {path} names properties the schema does not define",
                                 param="json_schema")
        if values is False:
            return '"{}"'
        if values is True:
            return "object"
        member = self._new_rule(f'string ": " {self.value(values, path + "/additionalProperties")}')
        return self._new_rule(f'"{{" ( {member} ( ", " {member} )* )? "}}"')

    def _array(self, schema: dict[str, Any], path: str) -> str:
        item = self.value(schema.get("items", True), f"{path}/items")
        low, high = _bound(schema, "minItems", path) or 0, _bound(schema, "maxItems", path)
        if high is not None and int(high) < low:
            raise InvalidRequest(f"maxItems at {path} is below minItems", param="json_schema")
        if high == 0:
            return '"[]"'
        more = _repeat(f'( ", " {item} )', max(low - 1, 0), None if high is None else int(high) - 1)
        items = f"{item} {more}".rstrip()
        return self._new_rule(f'"[" ( {items} )? "]"' if low == 0 else f'"[" {items} "]"')

    def _string(self, schema: dict[str, Any], path: str) -> str:
        low, high = _bound(schema, "minLength", path) or 0, _bound(schema, "maxLength", path)
        if low == 0 and high is None:
            return "string"
        if high is not None and int(high) < low:
            raise InvalidRequest(f"maxLength at {path} is below minLength", param="json_schema")
        chars = _repeat("char", low, None if high is None else int(high))
        return self._new_rule(f'"\\"" {chars} "\\""' if chars else '"\\"\\""', prefix="s")


#: The largest length or count bound a schema may set: past it the grammar libraries' integers
#: overflow (10**12 reached the user as a parser's position and "error parsing signed integer").
MAX_BOUND = 100_000


def _bound(schema: dict[str, Any], keyword: str, path: str) -> int | None:
    value = schema.get(keyword)
    if value is not None and int(value) > MAX_BOUND:
        raise InvalidRequest(f"{keyword} at {path} is {value}; vinolm enforces bounds up to {MAX_BOUND}",
                             param="json_schema")
    return None if value is None else int(value)


def _guess_type(schema: dict[str, Any], path: str) -> str:
    """The type a schema without ``type`` means by its keywords (``properties`` -> object)."""
    for kind, words in (("object", {"properties", "required", "additionalProperties"}),
                        ("array", {"items", "minItems", "maxItems"}), ("string", {"minLength", "maxLength"})):
        if words & set(schema):
            return kind
    raise InvalidRequest(f"the JSON schema at {path} needs a type", param="json_schema")


def _repeat(item: str, low: int, high: int | None) -> str:
    """``item`` low to high times (high None: no bound). Both libraries refuse a ``{0,0}``
    range (llguidance: "end number in range cannot be 0"), so zero times is no text at all,
    which a caller must not leave alone in a rule (GBNF has no empty literal)."""
    if high == 0:
        return ""
    if low == high:
        return item if low == 1 else f"{item}{{{low},{low}}}"
    if (low, high) == (0, None):
        return f"{item}*"
    if (low, high) == (1, None):
        return f"{item}+"
    if (low, high) == (0, 1):
        return f"{item}?"
    return f"{item}{{{low},{'' if high is None else high}}}"


# -- tool_choice auto: free text, or calls in the family's format ------------------------------------
def tool_calls_grammar(schema: dict[str, Any], fmt: str) -> str:
    """GBNF for a ``tool_calls`` constraint: free text, or calls in the family's format whose
    JSON follows ``schema`` (one call, or an array schema: ``minItems`` to ``maxItems`` calls).

    With a trigger (Hermes ``<tool_call>``, Mistral ``[TOOL_CALLS]``) the answer is text
    that never spells the trigger, or such text, the trigger and then only calls. The text
    and the trigger form one rule (``head``), so llguidance lexes them as one lexeme that
    ends exactly where the trigger does (its lexemes end greedily: a text lexeme of its own
    would swallow ``<tool_call`` and leave no way to write the ``>``). Without a trigger
    (Llama 3 JSON) the answer is calls, or text that does not open with ``{``.
    """
    from vinolm.prompts.tools import CALL_FORMATS

    form = CALL_FORMATS.get(fmt)
    if form is None:
        raise InvalidRequest(f"unknown tool format {fmt!r}; use one of {', '.join(CALL_FORMATS)}", param="tool_calls")
    one, low, high = (schema.get("items", True), int(schema.get("minItems", 1)), schema.get("maxItems")) \
        if schema.get("type") == "array" else (schema, 1, 1)
    call = schema_grammar(one).replace("root ::= ", "call ::= ", 1)
    item = " ".join(gbnf_literal(p) if p != "call" else p for p in (form.item_open, "call", form.item_close) if p)
    more = _repeat(f"( {gbnf_literal(form.separator)} {item} )" if form.separator else f"( {item} )",
                   max(low - 1, 0), None if high is None else int(high) - 1)
    opening = form.opening + form.item_open
    if form.trigger is None:
        head, rest = "", f"{item} {more}".strip()
        free = r'free ::= [ \t\n\r]* ( [^{ \t\n\r] ( [^{] | "{" )* )?'
    else:
        rest_open = opening.removeprefix(form.trigger)
        body = " ".join(gbnf_literal(p) if p != "call" else p for p in (rest_open, "call", form.item_close) if p)
        head = f"head ::= free {gbnf_literal(form.trigger)}\n"
        rest = f"head {body} {more}".strip()
        free = "free ::= " + trigger_free_text(form.trigger)
    tail = f" {gbnf_literal(form.closing)}" if form.closing else ""
    return f"root ::= free | {rest}{tail}\n{head}{free}\n{call}"


def trigger_free_text(trigger: str) -> str:
    """A GBNF expression for the texts that never contain ``trigger``.

    For a trigger whose first character does not occur again in it (``<tool_call>``,
    ``[TOOL_CALLS]``): any character but the first, or runs of the trigger's proper
    prefixes followed by a character that leaves it (neither its next character nor the
    first one), and at the end any run of proper prefixes.
    """
    first, rest = trigger[0], trigger[1:]
    if first in rest or not rest:
        raise ValueError(f"trigger {trigger!r}: its first character must not repeat")
    prefix = ""  # rest[:k] for k = 0 .. len(rest) - 1, nested: ( "t" ( "o" ... )? )?
    for char in reversed(rest[:-1]):
        prefix = f"( {gbnf_literal(char)} {prefix} )?" if prefix else f"( {gbnf_literal(char)} )?"
    leave = ""  # after rest[:k], a character that is neither rest[k] nor the first one
    for char in reversed(rest):
        other = f"[^{_class_char(first)}{_class_char(char)}]"
        leave = f"( {other} | {gbnf_literal(char)} {leave} )" if leave else other
    start = gbnf_literal(first)
    partial = f"{start} {prefix}" if prefix else start
    return f"( [^{_class_char(first)}] | ( {partial} )* {start} {leave} )* ( {partial} )*"


def _class_char(char: str) -> str:
    """``char`` inside a GBNF character class: as it is, with a backslash before the few
    characters a class gives a meaning. Not as a ``\\x`` escape: xgrammar (genai) misreads
    ``[^\\x3c]`` - measured, it let ``<tool_call>`` through as free text."""
    return "\\" + char if char in "\\]^-[" else char
