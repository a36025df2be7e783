"""The JSON-schema constraint of ``vinolm bench --json-schema``: the default schema, reading
a user's, and the check that a constrained run followed it.

Every bench generation is greedy and exactly ``--new-tokens`` long, so every row's tokens/s
covers the same work. A constrained answer cannot ignore EOS (the engines refuse
``ignore_eos`` with a constraint: the answer ends where the grammar does), and a grammar
that may end early would let a run stop short. The default schema therefore cannot end
within any budget the bench uses: an object whose array holds at least
:data:`MIN_ITEMS` objects. Its shortest document (``{"items": [{"name": "", "count": 0},
...]}``) is over 100 kB, thousands of tokens even if every token were 30 bytes long, so
the grammar decides every one of the N tokens: the stop tokens stay masked, and the
per-token mask is computed on each step as it is for a real extraction. The schema is
ordinary (object, array, string and integer properties) so the mask costs what users'
schemas cost; the lower bound on the array only keeps the end out of reach. A user's
schema (``--json-schema FILE``) must not end within the budget either: the bench checks
that each run generated exactly N tokens and names the schema when one did not.

The check that the output is a prefix of a valid document uses llguidance (the grammar
the native and optimum engines enforce) on the generated tokens, so a genai run is also
checked by the other library.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from vinolm.errors import InvalidRequest

#: ``--json-schema default`` (or the flag alone): the schema below.
DEFAULT = "default"
#: Fewer items than this never make a document, so no run can reach the end of one.
MIN_ITEMS = 4096
DEFAULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "minItems": MIN_ITEMS,
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "count": {"type": "integer"}},
                "required": ["name", "count"],
            },
        },
    },
    "required": ["items"],
}
#: What a constrained row's label ends with, after its unconstrained twin's label.
SUFFIX = " + json-schema"


def load_schema(spec: str) -> dict[str, Any]:
    """The schema ``--json-schema`` names (:data:`DEFAULT` or a JSON file), compiled once here
    so a bad one is a one-line error before any engine loads."""
    from vinolm.cliutil import json_schema_file
    from vinolm.engines.constraints import compile_constraint
    from vinolm.types import Constraint

    if spec == DEFAULT:
        return DEFAULT_SCHEMA
    schema = json_schema_file(spec)
    if not isinstance(schema, dict):
        raise InvalidRequest(f"--json-schema {spec} must hold a JSON Schema object")
    try:
        compile_constraint(Constraint("json_schema", schema=schema))
    except InvalidRequest as exc:
        raise InvalidRequest(f"--json-schema {spec}: {exc}") from None
    return schema


def short_run(generated: int, wanted: int, constrained: bool) -> str:
    """What a run of the wrong length says; a constrained one stops short when a document of
    its schema fits in the budget."""
    said = f"generated {generated} tokens, wanted {wanted}"
    if not constrained:
        return said
    return (f"{said}: a document of the --json-schema schema ended; use one whose documents are longer "
            "than --new-tokens (like the default one)")


def check_prefix(folder: Path, encode: Callable[[str], list[int]], schema: dict[str, Any], ids: list[int]) -> None:
    """Raise RuntimeError unless ``ids`` are a start of a document of ``schema``."""
    from vinolm.engines.constraints import compile_constraint, vocabulary_for
    from vinolm.types import Constraint

    compiled = compile_constraint(Constraint("json_schema", schema=schema))
    matcher = vocabulary_for(folder, [], encode).matcher(compiled)
    valid = matcher.validate_tokens(ids)
    if valid != len(ids):
        raise RuntimeError(f"the constrained output leaves the schema at token {valid} of {len(ids)} "
                           f"(token id {ids[valid]})")
