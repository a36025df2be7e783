"""Responses and chat sessions: the Python API's building blocks (after simonw/llm).

A :class:`Response` is lazy: nothing runs until it is iterated (streaming text pieces)
or read with :meth:`Response.text`. A :class:`Chat` keeps the conversation; each
``send`` returns a Response whose answer joins the history once it finishes, also when
it was stopped early, so the model sees what the user saw.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vinolm.errors import InvalidRequest
from vinolm.types import Constraint, FinishReason, GenerationParams, Message, Metrics, Request

if TYPE_CHECKING:
    from vinolm.engines.base import Engine, Generation


#: Keyword shortcuts for a constraint: ``json_schema={...}``, ``json_object=True``, ``regex=``,
#: ``grammar=`` (GBNF), ``choices=[...]``; or ``constraint=Constraint(...)`` itself.
CONSTRAINT_OPTIONS = ("json_schema", "json_object", "regex", "grammar", "choices")


def with_constraint(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with the constraint shortcuts folded into one ``constraint``; giving two
    constraints is an error, never one silently winning over the other."""
    given = {name: options[name] for name in CONSTRAINT_OPTIONS if options.get(name) not in (None, False)}
    rest = {k: v for k, v in options.items() if k not in CONSTRAINT_OPTIONS}
    if rest.get("constraint") is not None:
        given["constraint"] = rest.pop("constraint")
    if len(given) > 1:
        raise InvalidRequest(f"give one constraint, not {' and '.join(given)}", param=next(iter(given)))
    if not given:
        return rest
    (name, value), = given.items()
    if name == "constraint":
        constraint = value
    elif name == "json_schema":
        constraint = Constraint("json_schema", schema=value)
    elif name == "json_object":
        constraint = Constraint("json_object")
    elif name == "regex":
        constraint = Constraint("regex", pattern=value)
    elif name == "grammar":
        constraint = Constraint("grammar", grammar=value)
    else:
        constraint = Constraint("choice", choices=tuple(value))
    return {**rest, "constraint": constraint}


class Response:
    """One answer. Iterate for text pieces as they are generated; ``text()`` for all of it."""

    def __init__(
        self,
        engine: Engine,
        request: Request,
        on_done: Callable[[Response], None] | None = None,
        postprocess: Callable[[str], str] | None = None,
    ) -> None:
        self._engine = engine
        self._request = request
        self._on_done = on_done
        self._postprocess = postprocess
        self._generation: Generation | None = None
        self._pieces: list[str] = []
        self._done = False
        self.finish_reason: FinishReason | None = None

    def __iter__(self) -> Iterator[str]:
        if self._done:
            yield from self._pieces
            return
        if self._generation is not None:
            raise RuntimeError("this response is already being read")
        self._generation = self._engine.generate(self._request)
        try:
            for chunk in self._generation:
                if chunk.finish_reason:
                    self.finish_reason = chunk.finish_reason
                if chunk.text:
                    self._pieces.append(chunk.text)
                    yield chunk.text
        finally:
            if not self._generation.wait(0):
                self._generation.cancel()
                self._generation.wait()
                self.finish_reason = "cancelled"
            self._finish()

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        if self._on_done is not None:
            self._on_done(self)

    def cancel(self) -> None:
        """Stop generating (from any thread); the text so far stays the answer."""
        if self._generation is not None:
            self._generation.cancel()

    def text(self) -> str:
        if not self._done:
            for _ in self:
                pass
        raw = "".join(self._pieces)
        return self._postprocess(raw) if self._postprocess else raw

    def __str__(self) -> str:
        return self.text()

    @property
    def metrics(self) -> Metrics:
        return self._generation.metrics if self._generation is not None else Metrics()


class Chat:
    """A conversation with one model. ``history`` is plain data: save it, load it, edit it."""

    def __init__(self, engine: Engine, system: str | None = None, params: GenerationParams | None = None) -> None:
        self.engine = engine
        self.params = params or GenerationParams()
        self.system = system
        self.history: list[Message] = []
        self.last: Response | None = None

    @property
    def messages(self) -> list[Message]:
        head = [Message("system", self.system)] if self.system else []
        return head + self.history

    def send(self, text: str, **params: Any) -> Response:
        """Ask ``text``; the returned Response streams the answer when iterated."""
        if not text.strip():
            raise InvalidRequest("the message is empty")
        settings = self.params.with_(**with_constraint(params)).validated() if params else self.params
        user = Message("user", text)
        request = Request(messages=self.messages + [user], params=settings)

        def remember(response: Response) -> None:
            self.history += [user, Message("assistant", response.text())]

        self.last = Response(self.engine, request, on_done=remember)
        return self.last

    def reset(self) -> None:
        self.history = []
        self.last = None

    def to_dict(self) -> dict[str, Any]:
        return {"system": self.system, "messages": [m.to_dict() for m in self.history]}

    def load_dict(self, data: dict[str, Any]) -> None:
        try:
            messages = [Message(m["role"], m["content"]) for m in data.get("messages", [])]
        except (KeyError, TypeError) as exc:
            raise InvalidRequest("a saved chat is {'system': ..., 'messages': [{'role', 'content'}, ...]}") from exc
        if any(m.role == "system" for m in messages):
            raise InvalidRequest("put the system message in 'system', not in 'messages'")
        self.system = data.get("system")
        self.history = messages

    def save(self, path: str | Path) -> None:
        """Write the conversation as JSON, atomically (temp file + rename; the temp file goes
        when the write fails, and a place that cannot be written is an InvalidRequest)."""
        path = Path(path)
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(self.to_dict(), out, ensure_ascii=False, indent=2)
            os.replace(tmp, path)
        except OSError as exc:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            raise InvalidRequest(f"cannot save to {path}: {exc.strerror or exc}") from None

    def load(self, path: str | Path) -> None:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise InvalidRequest(f"no such file: {path}") from exc
        except OSError as exc:
            raise InvalidRequest(f"cannot read {path}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise InvalidRequest(f"{path} is not a saved chat (invalid JSON: {exc})") from exc
        if not isinstance(data, dict):
            raise InvalidRequest(f"{path} is not a saved chat")
        self.load_dict(data)
