"""Stop rules shared by the engines that see token ids (genai, native), so a sequence ends
for the same reason, with the same text, whichever engine produced it."""

from __future__ import annotations

import re
from pathlib import Path

from vinolm.engines.base import PreparedInput
from vinolm.engines.streaming import TextStreamer
from vinolm.errors import EngineError, InvalidRequest, VinolmError
from vinolm.types import FinishReason


def finish_reason_for(token: int, count: int, prepared: PreparedInput) -> FinishReason | None:
    """Why the sequence ends at its ``count``-th token ``token``, or None if it goes on."""
    if token in prepared.stop_token_ids:
        return "stop"
    if count >= prepared.max_new_tokens:
        return "length"
    return None


def finish_sequence(ids: list[int], prepared: PreparedInput, text: TextStreamer) -> tuple[str, FinishReason]:
    """Detokenize a whole sequence with the same stop rules as streaming."""
    pieces: list[str] = []
    for token in ids:
        if token in prepared.stop_token_ids:
            return "".join(pieces) + text.flush(), "stop"
        pieces.append(text.push(token))
        if text.stopped:
            return "".join(pieces), "stop"
    reason: FinishReason = "length" if len(ids) >= prepared.max_new_tokens else "stop"
    return "".join(pieces) + text.flush(), reason


def first_line(exc: BaseException) -> str:
    """The useful line of an OpenVINO error (they start with C++ source locations)."""
    lines = [line for line in str(exc).splitlines() if line.strip() and "Exception from" not in line]
    return lines[-1].strip() if lines else type(exc).__name__


def load_error(library: str, path: Path, exc: BaseException) -> VinolmError:
    """The error for a model ``library`` could not load: the caller's (exit 2, a 400) when
    OpenVINO names a property of theirs it does not have, else the engine's (exit 1)."""
    line = first_line(exc)
    unknown = re.search(r"Unsupported property (\S+) by (\S+) plugin", line)
    if unknown:
        return InvalidRequest(f"OpenVINO's {unknown.group(2)} plugin has no property {unknown.group(1)} "
                              "(from --ov-config or the model's settings)", param="ov_config")
    return EngineError(f"{library} cannot load {path}: {line}")
