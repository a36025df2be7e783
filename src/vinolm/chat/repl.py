"""The terminal chat: streaming answers, Ctrl-C stops an answer (not the session), slash commands.

Input is read with ``input()`` (readline editing when available). A line ending with a
backslash continues on the next line; a line of three double quotes opens and closes a
multi-line block, as in Ollama.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from typing import TextIO

from vinolm.chat.session import Chat
from vinolm.errors import VinolmError

HELP = """commands:
  /reset          forget the conversation (keeps the system message)
  /system TEXT    set the system message (empty TEXT removes it) and reset
  /save FILE      save the conversation as JSON
  /load FILE      load a saved conversation
  /stats          metrics of the last answer
  /history        show the conversation
  /exit           quit (or Ctrl-D)
multi-line input: end a line with \\ to continue, or wrap the text in \"\"\" lines.
Ctrl-C stops the current answer."""


class ChatRepl:
    def __init__(self, chat: Chat, out: TextIO = sys.stdout, read: Callable[[str], str] = input) -> None:
        self.chat = chat
        self.out = out
        self.read = read

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def run(self) -> int:
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
        _take_ctrl_c()
        self.say(f"vinolm chat with {self.chat.engine.model.name} — /help for commands, Ctrl-D to quit")
        while True:
            try:
                text = self.read_message()
            except EOFError:
                self.say()
                return 0
            except KeyboardInterrupt:
                self.say("\n(use /exit or Ctrl-D to quit)")
                continue
            if not text.strip():
                continue
            try:
                if text.startswith("/"):
                    if self.command(text.strip()) == "exit":
                        return 0
                else:
                    self.answer(text)
            except VinolmError as exc:
                self.say(f"error: {exc.message}")

    def read_message(self) -> str:
        first = self.read(">>> ")
        if first.strip() == '"""':
            lines = []
            while (line := self.read("... ")).strip() != '"""':
                lines.append(line)
            return "\n".join(lines)
        lines = [first]
        while lines[-1].endswith("\\"):
            lines[-1] = lines[-1][:-1]
            lines.append(self.read("... "))
        return "\n".join(lines)

    def answer(self, text: str) -> None:
        response = self.chat.send(text)
        try:
            for piece in response:
                self.out.write(piece)
                self.out.flush()
        except KeyboardInterrupt:
            response.cancel()
            self.out.write(" [stopped]")
        self.say()

    def command(self, line: str) -> str | None:
        name, _, arg = line.partition(" ")
        arg = arg.strip()
        if name in {"/exit", "/quit", "/bye"}:
            return "exit"
        if name == "/help":
            self.say(HELP)
        elif name == "/reset":
            self.chat.reset()
            self.say("(conversation cleared)")
        elif name == "/system":
            self.chat.system = arg or None
            self.chat.reset()
            self.say(f"(system message {'set' if arg else 'removed'}; conversation cleared)")
        elif name in {"/save", "/load"}:
            self.file_command(name, arg)
        elif name == "/stats":
            self.stats()
        elif name == "/history":
            for message in self.chat.messages:
                self.say(f"{message.role}: {message.content}")
        else:
            self.say(f"unknown command {name}; /help lists them")
        return None

    def file_command(self, name: str, arg: str) -> None:
        if not arg:
            self.say(f"usage: {name} FILE")
        elif name == "/save":
            self.chat.save(arg)
            self.say(f"(saved {len(self.chat.history)} messages to {arg})")
        else:
            self.chat.load(arg)
            self.say(f"(loaded {len(self.chat.history)} messages from {arg})")

    def stats(self) -> None:
        from vinolm.cliutil import metrics_line

        if self.chat.last is None:
            self.say("(no answer yet)")
        else:
            self.say(metrics_line(self.chat.last.metrics))


def _take_ctrl_c() -> None:
    """Ctrl-C must reach the chat even when it was started with SIGINT ignored (a background
    job of a script, a parent that ignores it): the ignore is inherited, and Python then
    never raises KeyboardInterrupt, so an answer could not be stopped."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
