"""The Python API: ``vinolm.load(...)`` returns a :class:`Model`.

    >>> import vinolm
    >>> m = vinolm.load("smollm2-135m")
    >>> m.generate("The capital of France is", max_new_tokens=8)
    >>> for piece in m.stream("Tell me a joke"): print(piece, end="")
    >>> chat = m.chat(system="You are terse.")
    >>> print(chat.send("Hi! My name is Ada.").text())
    >>> m.generate("A cat as JSON:", json_schema={"type": "object", "properties": {...}})

Every method takes the generation parameters as keywords, plus one constraint:
``json_schema=``, ``json_object=True``, ``regex=``, ``grammar=`` (GBNF), ``choices=[...]``
or ``constraint=Constraint(...)``.
"""

from __future__ import annotations

from typing import Any, Self

from vinolm.chat.session import Chat, Response, with_constraint
from vinolm.engines import DEFAULT_ENGINE, load_engine
from vinolm.engines.base import Engine, EngineOptions
from vinolm.types import GenerationParams, Request


class Model:
    """A loaded model with convenient text-in/text-out methods. ``engine`` is the full interface."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @property
    def name(self) -> str:
        return self.engine.model.name

    def stream(self, prompt: str, **params: Any) -> Response:
        """A lazy Response for a raw prompt: iterate it for text pieces."""
        return Response(self.engine, Request(prompt=prompt, params=_params(params)))

    def generate(self, prompt: str, **params: Any) -> str:
        return self.stream(prompt, **params).text()

    def instruct(self, instruction: str, **params: Any) -> Response:
        """Follow one instruction with the model's instruction template; only the answer comes back."""
        from vinolm.prompts import instruction_request, response_only

        spec = self.engine.model.chat_spec
        request = instruction_request(spec, instruction, _params(params))
        return Response(self.engine, request, postprocess=lambda text: response_only(spec, text))

    def chat(self, system: str | None = None, **params: Any) -> Chat:
        return Chat(self.engine, system=system, params=_params(params))

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _params(values: dict[str, Any]) -> GenerationParams:
    return GenerationParams.from_dict(with_constraint(values)) if values else GenerationParams()


def load(
    model: str | None = None,
    engine: str = DEFAULT_ENGINE,
    device: str = "CPU",
    ov_config: dict[str, Any] | None = None,
    weight_format: str | None = None,
    batching: bool = False,
) -> Model:
    """Prepare ``model`` (catalog name, folder, .gguf or hub id; default smollm2-135m) and load it."""
    from vinolm.models import prepare

    prepared = prepare(model, weight_format, progress=lambda message: None)
    options = EngineOptions(device=device, ov_config=dict(ov_config or {}), batching=batching)
    return Model(load_engine(engine, prepared, options))
