"""Wire models shared by the OpenAI endpoints: the strict base that refuses what vinolm does
not act on, and the structured-answer fields - ``response_format``, vLLM's ``guided_*`` and
``structured_outputs``, ``tools`` and ``tool_choice`` - with their translation into one
:class:`~vinolm.types.Constraint` or a :class:`ToolPlan`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from vinolm.errors import InvalidRequest, VinolmError
from vinolm.prompts.tools import arguments_schema, auto_constraint, calls_schema
from vinolm.types import Constraint, Tool

#: Fields that change nothing for a local server, with the values accepted as no-ops;
#: any other value of them is a 400. The rest of the request is acted on or refused.
INERT: dict[str, tuple[Any, ...]] = {
    "store": (None, False), "service_tier": (None, "auto", "default"), "modalities": (None, ["text"]),
    "logit_bias": (None, {}), "best_of": (None, 1), "echo": (None, False), "suffix": (None, ""),
    "functions": (None,), "function_call": (None,), "audio": (None,), "prediction": (None,),
    "web_search_options": (None,), "reasoning_effort": (None,), "verbosity": (None,),
    "prompt_cache_retention": (None,),
}


def unsupported(field: str, why: str = "") -> InvalidRequest:
    return InvalidRequest(f"{field} is not supported by vinolm{': ' + why if why else ''}", param=field,
                          code="unsupported_parameter")


class Wire(BaseModel):
    """Wire models: strict types, and fields nobody declared kept aside to be refused by name."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="allow")

    def check_supported(self, where: str = "", inert: frozenset[str] = frozenset()) -> None:
        """Refuse undeclared fields here and in every nested model, naming the first one;
        ``inert`` names top-level fields already checked as no-ops."""
        for name in self.model_extra or {}:
            if name not in inert:
                raise unsupported(f"{where}{name}")
        for name in type(self).model_fields:
            value = getattr(self, name)
            items = value if isinstance(value, list) else [value]
            for index, item in enumerate(items):
                if isinstance(item, Wire):
                    suffix = f".{index}" if isinstance(value, list) else ""
                    item.check_supported(f"{where}{name}{suffix}.")


class JsonSchemaFormat(Wire):
    name: str = Field(..., description="The schema's name (not used for decoding).")
    schema_: dict[str, Any] = Field(..., alias="schema", description="The JSON Schema the answer follows.")
    strict: bool | None = Field(None, description="Always enforced while sampling; true and false alike.")
    description: str | None = None


class ResponseFormat(Wire):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StructuredOutputs(Wire):
    """vLLM's ``structured_outputs`` object: at most one of its fields."""

    json_: dict[str, Any] | str | None = Field(None, alias="json", description="A JSON Schema (object or JSON text).")
    json_object: bool | None = Field(None, description="true: any JSON object.")
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = Field(None, description="A GBNF / EBNF grammar.")


class GuidedDecoding(Wire):
    """Output constraints beyond OpenAI's ``response_format``, under the names vLLM users send."""

    response_format: ResponseFormat | None = Field(
        None, description="text, json_object (any JSON object) or json_schema (json_schema.schema).")
    guided_json: dict[str, Any] | str | None = Field(None, description="vLLM extension: a JSON Schema the answer follows.")
    guided_regex: str | None = Field(None, description="vLLM extension: a regular expression the answer matches.")
    guided_choice: list[str] | None = Field(None, description="vLLM extension: the answer is exactly one of these.")
    guided_grammar: str | None = Field(None, description="vLLM extension: a GBNF / EBNF grammar the answer follows.")
    structured_outputs: StructuredOutputs | None = Field(
        None, description="vLLM extension: one of json, json_object, regex, choice, grammar.")

    def constraints(self) -> list[tuple[str, Constraint]]:
        """Every constraint the request gives, each with the field it came from."""
        found: list[tuple[str, Constraint]] = []
        fmt = self.response_format
        if fmt is not None and fmt.type != "json_schema" and fmt.json_schema is not None:
            raise InvalidRequest(f"response_format.json_schema goes with type json_schema, not {fmt.type!r}",
                                 param="response_format.json_schema")
        if fmt is not None and fmt.type == "json_object":
            found.append(("response_format", Constraint("json_object")))
        if fmt is not None and fmt.type == "json_schema":
            if fmt.json_schema is None:
                raise InvalidRequest("response_format type json_schema needs json_schema.schema",
                                     param="response_format.json_schema")
            found.append(("response_format.json_schema.schema", _schema(fmt.json_schema.schema_, "response_format")))
        options = self.structured_outputs
        for param, kind, value in (
            ("guided_json", "json_schema", self.guided_json), ("guided_regex", "regex", self.guided_regex),
            ("guided_choice", "choice", self.guided_choice), ("guided_grammar", "grammar", self.guided_grammar),
            ("structured_outputs.json", "json_schema", options and options.json_),
            ("structured_outputs.json_object", "json_object", options and options.json_object),
            ("structured_outputs.regex", "regex", options and options.regex),
            ("structured_outputs.choice", "choice", options and options.choice),
            ("structured_outputs.grammar", "grammar", options and options.grammar),
        ):
            if value is not None and value is not False:
                found.append((param, _constraint(kind, value, param)))
        return found


def _schema(value: dict[str, Any] | str, param: str) -> Constraint:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise InvalidRequest(f"{param} is not valid JSON: {exc}", param=param) from None
    if not isinstance(value, dict):
        raise InvalidRequest(f"{param} must be a JSON Schema object", param=param)
    return Constraint("json_schema", schema=value)


def _constraint(kind: str, value: Any, param: str) -> Constraint:
    """One guided field as a Constraint; its own checks are reported under ``param``."""
    try:
        if kind == "json_schema":
            return _schema(value, param)
        if kind == "json_object":
            return Constraint("json_object")
        if kind == "choice":
            return Constraint("choice", choices=tuple(value))
        return Constraint(kind, **{"pattern" if kind == "regex" else "grammar": value})  # type: ignore[arg-type]
    except VinolmError as exc:
        exc.param = param
        raise


class FunctionCall(Wire):
    name: str
    arguments: str = Field(..., description="The arguments as a JSON object in text.")


class ToolCallItem(Wire):
    """A call the assistant made, sent back in the history."""

    id: str
    type: Literal["function"]
    function: FunctionCall


class FunctionDefinition(Wire):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = Field(None, description="JSON Schema of the arguments; none = no arguments.")
    strict: bool | None = Field(None, description="Arguments follow the schema exactly when the call is forced "
                                                  "(tool_choice required or named), whatever this says.")


class ToolDefinition(Wire):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(Wire):
    name: str


class NamedToolChoice(Wire):
    type: Literal["function"]
    function: NamedFunction


@dataclass(frozen=True)
class ToolPlan:
    """What a request's tools ask of the answer.

    ``none``: no tools are offered. ``auto``: offered; the model may answer or call, in its
    own format (``tool_format``, the served model's family), recognised afterwards; once
    the model starts a call, the grammar holds it to a call of an offered tool with valid
    arguments (``auto_constraint``). ``required`` and ``named``: the answer is forced, by a
    JSON schema built from the tools' parameters, to be calls (``calls_schema``) or the named
    tool's arguments, so even a tiny model returns a valid call.
    """

    tools: tuple[Tool, ...] = ()
    mode: Literal["none", "auto", "required", "named"] = "none"
    named: str | None = None
    parallel: bool = True
    #: The model family's call format; None (not known yet): ``auto`` leaves the answer free.
    tool_format: str | None = None

    @property
    def offered(self) -> bool:
        return self.mode != "none"

    def constraint(self) -> Constraint | None:
        if self.mode == "auto":
            return auto_constraint(self.tools, self.tool_format, self.parallel) if self.tool_format else None
        if self.mode == "named":
            tool = next(t for t in self.tools if t.name == self.named)
            return Constraint("json_schema", schema=arguments_schema(tool))
        if self.mode == "required":
            return Constraint("json_schema", schema=calls_schema(self.tools, self.parallel))
        return None


def unique_tools(tools: Sequence[Tool], param: str = "tools", inner: str = "") -> list[Tool]:
    """The tools as given, refusing a second tool of the same name (which call would it be?)
    and parameters that are no JSON schema, named where the API keeps them (``inner``: the
    path inside an item, ``function.`` in OpenAI's and Ollama's), whether or not this request
    gets as far as compiling a grammar from them (Anthropic's count_tokens does not)."""
    from vinolm.engines.json_grammar import check_schema

    seen: set[str] = set()
    for i, tool in enumerate(tools):
        if tool.name in seen:
            raise InvalidRequest(f"{param}.{i}: a second tool named {tool.name!r}", param=f"{param}.{i}.{inner}name")
        seen.add(tool.name)
        try:
            check_schema(tool.parameters)
        except InvalidRequest as exc:
            raise InvalidRequest(f"{param}.{i}: tool {tool.name!r}: {exc.message}", param=f"{param}.{i}") from None
    return list(tools)
