"""Render Hugging Face chat templates without transformers.

Templates come from model repositories, i.e. from strangers, so they run in jinja's
immutable sandbox. The environment matches what ``tokenizer.apply_chat_template`` gives a
template (trim/lstrip blocks, loop controls, ``raise_exception``, ``strftime_now``, a
non-ASCII-escaping ``tojson``, a pass-through ``{% generation %}`` block), so that a
template renders here exactly as it does in transformers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any, ClassVar

import jinja2
from jinja2 import meta, nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from vinolm.errors import InvalidRequest


class _TemplateRejected(jinja2.TemplateError):
    """Raised by a template's own ``raise_exception(...)``: it refuses the conversation."""


class _GenerationBlock(Extension):
    """``{% generation %}`` marks assistant text for training masks; rendering ignores it."""

    tags: ClassVar[set[str]] = {"generation"}

    def parse(self, parser: Any) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(lineno)

    def _render_body(self, caller: Callable[[], str]) -> str:
        return caller()


def render_template(
    template: str, variables: Mapping[str, Any], *, model: str | None = None
) -> str:
    """Render ``template`` with ``variables``; any template failure becomes InvalidRequest.

    A template that rejects a conversation (e.g. "System role not supported") is the
    caller's problem to fix, so the message passes the template's own words on.
    """
    who = f"the chat template of {model}" if model else "the model's chat template"
    try:
        return _compile(template).render(**variables)
    except _TemplateRejected as exc:
        raise InvalidRequest(f"{who} rejected the conversation: {exc}", param="messages") from exc
    except jinja2.TemplateError as exc:
        raise InvalidRequest(f"{who} failed: {type(exc).__name__}: {exc}", param="messages") from exc


@lru_cache(maxsize=16)
def uses_variable(template: str, name: str) -> bool:
    """Whether ``template`` reads the variable ``name`` (e.g. ``tools``), from its syntax tree.

    A template that cannot be parsed reads nothing; rendering it reports the error.
    """
    try:
        return name in meta.find_undeclared_variables(_environment().parse(template))
    except jinja2.TemplateSyntaxError:
        return False


@lru_cache(maxsize=16)
def _compile(template: str) -> jinja2.Template:
    return _environment().from_string(template)


@lru_cache(maxsize=1)
def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationBlock, loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


def _raise_exception(message: str) -> None:
    raise _TemplateRejected(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    """jinja's own tojson escapes HTML and non-ASCII; chat templates need the raw text."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
