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
    _check_meta(schema)
    builder = _SchemaGrammar(schema)
    root = builder.value(schema, "#")
    reached, todo = set(), [root]
    while todo:  # only the rules the root reaches (optional members leave some unused)
        for name in re.findall(r"\br\d+\b", todo.pop()):
            if name not in reached and name in builder.rules:
                reached.add(name)
                todo.append(builder.rules[name])
    rules = [f"root ::= {root}"] + [f"{n} ::= {body}" for n, body in builder.rules.items() if n in reached]
    return "\n".join(rules) + "\n" + JSON_RULES


def _check_meta(schema: Any) -> None:
    import jsonschema

    if not isinstance(schema, dict):
        raise InvalidRequest("a JSON schema must be an object", param="json_schema")
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

    def _new_rule(self, body: str | None = None) -> str:
        name = f"r{len(self.rules) + 1}"
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
        self.rules[name] = self.value(target, ref)
        return name

    def _typed(self, kind: str, schema: dict[str, Any], path: str) -> str:
        if kind == "object":
            return self._object(schema, path)
        if kind == "array":
            return self._array(schema, path)
        if kind == "string":
            return self._string(schema)
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
        low, high = int(schema.get("minItems", 0)), schema.get("maxItems")
        if high is not None and int(high) < low:
            raise InvalidRequest(f"maxItems at {path} is below minItems", param="json_schema")
        if high == 0:
            return '"[]"'
        more = _repeat(f'( ", " {item} )', max(low - 1, 0), None if high is None else int(high) - 1)
        items = f"{item} {more}"
        return self._new_rule(f'"[" ( {items} )? "]"' if low == 0 else f'"[" {items} "]"')

    def _string(self, schema: dict[str, Any]) -> str:
        low, high = int(schema.get("minLength", 0)), schema.get("maxLength")
        if low == 0 and high is None:
            return "string"
        return self._new_rule(f'"\\"" {_repeat("char", low, None if high is None else int(high))} "\\""')


def _guess_type(schema: dict[str, Any], path: str) -> str:
    """The type a schema without ``type`` means by its keywords (``properties`` -> object)."""
    for kind, words in (("object", {"properties", "required", "additionalProperties"}),
                        ("array", {"items", "minItems", "maxItems"}), ("string", {"minLength", "maxLength"})):
        if words & set(schema):
            return kind
    raise InvalidRequest(f"the JSON schema at {path} needs a type", param="json_schema")


def _repeat(item: str, low: int, high: int | None) -> str:
    if (low, high) == (0, None):
        return f"{item}*"
    if (low, high) == (1, None):
        return f"{item}+"
    if (low, high) == (0, 1):
        return f"{item}?"
    return f"{item}{{{low},{'' if high is None else high}}}"
