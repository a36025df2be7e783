"""Incremental detokenization with stop strings, for engines that stream token by token.

Decoding each token alone is wrong twice over: byte-level BPE splits one character
across tokens (decoding a part gives U+FFFD), and SentencePiece drops a token's
leading space when it starts the decoded text. So, like HF's TextStreamer and vLLM's
``detokenize_incrementally``, we decode a short window (from ``prefix_offset``) and
emit only what the newest tokens added beyond ``read_offset``; the window restarts
after every emission, so the cost per token stays O(1) however long the output gets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

_REPLACEMENT = "\ufffd"
#: Prompt tokens kept as decoding context, so the first generated word keeps its space.
CONTEXT_TOKENS = 5


class TextStreamer:
    """Turns token ids into printable text deltas, never leaking a stop string.

    ``push`` returns the new text (possibly empty); once a stop string appears,
    the text before it is returned, ``stopped`` becomes True and later pushes return
    nothing. Text that could still become a stop string is held back until it cannot.
    """

    def __init__(
        self,
        detokenize: Callable[[list[int]], str],
        stop_strings: Iterable[str] = (),
        prompt_ids: Sequence[int] = (),
    ) -> None:
        self._detokenize = detokenize
        self._stops = tuple(s for s in stop_strings if s)
        self._stop_prefixes = {s[:i] for s in self._stops for i in range(1, len(s))}
        self._longest_prefix = max((len(s) - 1 for s in self._stops), default=0)
        # The window is tokens[prefix_offset:]; ``_read`` is read_offset within it.
        self._window = [int(t) for t in prompt_ids[-CONTEXT_TOKENS:]]
        self._read = len(self._window)
        self._prefix_text: str | None = None
        self._pending = ""  # decoded, but it might start a stop string
        self.stopped = False

    def push(self, token_id: int) -> str:
        """Add one token; return the text that is now certain."""
        if self.stopped:
            return ""
        self._window.append(int(token_id))
        prefix_text = self._decoded_prefix()
        text = self._detokenize(self._window)
        if text.endswith(_REPLACEMENT):  # a character is still incomplete
            return self._stop_early(text[len(prefix_text) :].rstrip(_REPLACEMENT))
        self._window = self._window[self._read :]
        self._read = len(self._window)
        self._prefix_text = None
        return self._release(text[len(prefix_text) :])

    def flush(self) -> str:
        """Everything still held back, for when generation ended without a stop."""
        if self.stopped:
            return ""
        prefix_text = self._decoded_prefix()
        text = self._detokenize(self._window) if self._window else ""  # some reject []
        released = self._release(text[len(prefix_text) :])
        rest, self._pending = self._pending, ""
        self._window, self._read, self._prefix_text = [], 0, None
        return released + rest

    def _decoded_prefix(self) -> str:
        """Text of the already-emitted part of the window, cached while it is unchanged."""
        if self._prefix_text is None:
            self._prefix_text = self._detokenize(self._window[: self._read]) if self._read else ""
        return self._prefix_text

    def _release(self, delta: str) -> str:
        """Emit ``delta`` after the pending text, up to a stop string or a possible one."""
        text = self._pending + delta
        before_stop = self._stop_at(text)
        if before_stop is not None:
            return before_stop
        hold = self._held_length(text)
        self._pending = text[len(text) - hold :] if hold else ""
        return text[: len(text) - hold]

    def _stop_early(self, partial: str) -> str:
        """A stop string may complete before an unfinished character does: stop now
        rather than after the model spends more tokens on the character."""
        return self._stop_at(self._pending + partial) or ""

    def _stop_at(self, text: str) -> str | None:
        """If ``text`` holds a complete stop string, stop and return what precedes the
        earliest one. Earlier output needs no search: a stop string starting there
        would still be pending."""
        found = [i for i in (text.find(s) for s in self._stops) if i >= 0]
        if not found:
            return None
        self.stopped, self._pending = True, ""
        return text[: min(found)]

    def _held_length(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that begins some stop string."""
        for size in range(min(len(text), self._longest_prefix), 0, -1):
            if text[-size:] in self._stop_prefixes:
                return size
        return 0
