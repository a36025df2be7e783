"""Stop rules shared by the engines that see token ids (genai, native), so a sequence ends
for the same reason, with the same text, whichever engine produced it."""

from __future__ import annotations

from vinolm.engines.base import PreparedInput
from vinolm.engines.streaming import TextStreamer
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
