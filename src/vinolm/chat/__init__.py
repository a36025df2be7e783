"""Chat sessions, responses and the terminal chat."""

from vinolm.chat.session import Chat, Response

__all__ = ["Chat", "Response"]
