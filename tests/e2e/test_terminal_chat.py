"""The real ``vinolm chat`` on a pseudo-terminal, driven the way a person types.

A pty (not pipes) matters: Ctrl-C reaches the program as SIGINT only through a terminal's
line discipline, and whether answers stream shows only in how the output arrives. The
conversation runs ten answered messages through one session; every wait is "read until
the ``>>> `` prompt is back" with a timeout, never a sleep.
"""

from __future__ import annotations

import codecs
import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

PROMPT = ">>> "
MAX_NEW_TOKENS = 48
LOAD_TIMEOUT = 300  # the first load may compile the model into the cache on a busy machine
ANSWER_TIMEOUT = 120
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # e.g. bracketed paste, should readline get loaded

pytestmark = pytest.mark.slow


def _vinolm_command() -> list[str]:
    """The installed console script, or the interpreter running the CLI module (a path, for execv)."""
    script = Path(sys.executable).with_name("vinolm")
    return [str(script)] if script.exists() else [sys.executable, "-m", "vinolm.cli"]


# Run first in the child's own new session: make the pty (its stdin) the controlling
# terminal, so ^C means SIGINT, then become vinolm. (No preexec_fn: unsafe with threads.)
_TAKE_TERMINAL = (
    "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


class Terminal:
    """A program on the slave side of a pty; the test is the keyboard and the screen."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        self.master, slave = pty.openpty()
        self.process = subprocess.Popen(
            [sys.executable, "-c", _TAKE_TERMINAL, *argv], stdin=slave, stdout=slave, stderr=slave, cwd=cwd,
            start_new_session=True, env={**os.environ, "TERM": "dumb", "PYTHONUNBUFFERED": "1"},
        )
        os.close(slave)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # reads may split a character
        self.screen = ""  # everything shown so far, newlines normalised, escapes removed

    def read_once(self, timeout: float = ANSWER_TIMEOUT) -> str:
        """One read of whatever the program printed next; fails after ``timeout`` or at its exit."""
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            pytest.fail(f"nothing printed within {timeout} s; the screen ends with:\n{self.screen[-2000:]}")
        try:
            data = os.read(self.master, 4096)
        except OSError:  # EIO: the program closed the terminal
            data = b""
        if not data:
            pytest.fail(f"vinolm chat ended unexpectedly; the screen ends with:\n{self.screen[-2000:]}")
        text = _ESCAPES.sub("", self._decoder.decode(data)).replace("\r\n", "\n")
        self.screen += text
        return text

    def read_until(self, marker: str, timeout: float = ANSWER_TIMEOUT) -> list[str]:
        """Read until what this call read ends with ``marker``; return the reads, in order."""
        reads: list[str] = []
        deadline = time.monotonic() + timeout
        while not "".join(reads).endswith(marker):
            reads.append(self.read_once(max(deadline - time.monotonic(), 0)))
        return reads

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def ask(self, line: str) -> str:
        """Type one line and return what the program printed until the next prompt."""
        self.type(line)
        return _after_echo("".join(self.read_until(PROMPT)), line)

    def interrupt(self) -> None:
        os.write(self.master, b"\x03")

    def close(self) -> None:
        """Ctrl-D if the program still runs (killed if it ignores it), then release the pty."""
        if self.process.poll() is None:
            os.write(self.master, b"\x04")
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        os.close(self.master)


def _after_echo(output: str, line: str) -> str:
    """The terminal echoes what was typed; the program's reply is what follows, minus the prompt."""
    start = output.find(line + "\n")
    body = output[start + len(line) + 1:] if start >= 0 else output
    return body.removesuffix(PROMPT).strip()


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    argv = [*_vinolm_command(), "chat", "--greedy", "--max-new-tokens", str(MAX_NEW_TOKENS)]
    term = Terminal(argv, cwd=tmp_path)
    try:
        term.read_until(PROMPT, timeout=LOAD_TIMEOUT)
        yield term
    finally:
        term.close()


def _answer_reads(reads: list[str], line: str) -> list[str]:
    """The reads that carried the answer: after the echo of ``line``, before the prompt.
    The echo itself may come in many reads (one per character when the terminal is fast)."""
    text_reads = []
    echo = ""
    for read in reads:
        if line not in echo:
            echo += read
            if line not in echo:
                continue
            read = echo.split(line, 1)[-1]
        if read.removesuffix(PROMPT).strip():
            text_reads.append(read)
    return text_reads


def _history(terminal: Terminal) -> list[str]:
    return terminal.ask("/history").splitlines()


def test_ten_turn_session(terminal: Terminal, tmp_path: Path) -> None:
    """Ten messages get answers, between them every slash command and both multi-line forms."""
    # Streaming: the first answer reaches the screen in several reads before the prompt returns.
    first = "Remember this: the secret word is banana. Reply with OK."  # see test_chat_api.py
    terminal.type(first)
    pieces = _answer_reads(terminal.read_until(PROMPT), first)
    assert len(pieces) >= 3, f"the answer arrived in {len(pieces)} read(s), not streamed: {pieces!r}"

    # The session carries context, and /history shows it.
    assert "banana" in terminal.ask("What is the secret word?").lower()
    history = _history(terminal)
    assert history[0] == f"user: {first}" and "user: What is the secret word?" in history
    assert [line.split(":")[0] for line in history if line.startswith(("user:", "assistant:"))] == [
        "user", "assistant", "user", "assistant"]

    # /stats prints the metrics line of the last answer.
    stats = terminal.ask("/stats")
    assert re.search(r"input tokens \d+ · generated tokens \d+ · time to first token \d+ ms", stats), stats

    # Ctrl-C mid-answer (its first text is on screen) stops that answer, not the program.
    story = "Write a very long story about a dragon who learns to bake bread."
    terminal.type(story)
    reads = [terminal.read_once()]
    while not _answer_reads(reads, story):
        reads.append(terminal.read_once())
    terminal.interrupt()
    stopped = "".join(reads + terminal.read_until(PROMPT))
    assert "[stopped]" in stopped, f"Ctrl-C did not stop the answer:\n{stopped}"
    assert terminal.ask("Say hello.")
    assert f"user: {story}" in _history(terminal), "the stopped exchange should stay in the history"

    # Multi-line input: a trailing backslash continues the line; \"\"\" lines wrap a block.
    terminal.type("Two lines follow: first line\\")
    terminal.read_until("... ")
    assert terminal.ask("second line.")
    for line in ('"""', "alpha", "beta"):
        terminal.type(line)
        terminal.read_until("... ")
    assert terminal.ask('"""')
    history = _history(terminal)
    assert "user: Two lines follow: first line" in history and "second line." in history
    assert "user: alpha" in history and history[history.index("user: alpha") + 1] == "beta"

    # /save, /reset (the history is empty), /load (it is back).
    saved = _history(terminal)
    assert "(saved 12 messages to chat.json)" in terminal.ask("/save chat.json")
    assert len(json.loads((tmp_path / "chat.json").read_text())["messages"]) == 12
    assert "(conversation cleared)" in terminal.ask("/reset")
    assert _history(terminal) == []
    assert terminal.ask("Name a colour.")
    assert "(loaded 12 messages from chat.json)" in terminal.ask("/load chat.json")
    assert _history(terminal) == saved
    assert terminal.ask("Thanks!")

    # /system sets the system message and starts over.
    assert "(system message set; conversation cleared)" in terminal.ask("/system You are a pirate.")
    assert _history(terminal) == ["system: You are a pirate."]
    assert terminal.ask("Who are you?")
    assert terminal.ask("Where is your ship?")
    assert _history(terminal)[:2] == ["system: You are a pirate.", "user: Who are you?"]

    terminal.type("/exit")
    assert terminal.process.wait(timeout=30) == 0
