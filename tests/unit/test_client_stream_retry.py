"""The OpenAI client against a real socket server whose stream breaks after its first token
(what a client of a SIGKILLed Ray replica sees): retried when nobody saw the partial text,
an error when ``on_text`` already showed it."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from vinolm.client import openai_client
from vinolm.client.common import ClientError, RetryPolicy, Target


def _event(payload: object) -> bytes:
    line = f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n".encode()
    return f"{len(line):x}\r\n".encode() + line + b"\r\n"


def _chunk(text: str) -> dict[str, object]:
    return {"choices": [{"index": 0, "delta": {"content": text}}]}


_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


@contextmanager
def breaking_server(broken: int, tail: bytes = b"") -> Iterator[tuple[str, list[int]]]:
    """Answers ``broken`` streams with one token then a cut connection (after ``tail``), then whole ones."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    served: list[int] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(10)
                request = b""
                while b"\r\n\r\n" not in request:
                    request += conn.recv(65536)
                head, _, body = request.partition(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                while len(body) < length:
                    body += conn.recv(65536)
                served.append(len(served))
                conn.sendall(_HEAD + _event(_chunk("Par")) + tail)
                if len(served) > broken:
                    usage = {"choices": [], "usage": {"completion_tokens": 2}}
                    conn.sendall(_event(_chunk("is")) + _event(usage) + _event("[DONE]") + b"0\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", served
    finally:
        stop.set()
        thread.join(timeout=10)
        listener.close()


def target(url: str) -> Target:
    return Target(url=url, model="m", max_tokens=4, retry=RetryPolicy(attempts=3, base_delay=0.01))


def test_a_stream_cut_after_text_nobody_saw_is_sent_again() -> None:
    with breaking_server(broken=2) as (url, served):
        result = openai_client.run(target(url), ["capital of France?"], stream=True)
    assert result.completions == ["Paris"] and result.token_counts == [2]  # not "ParParParis"
    assert len(served) == 3


def test_a_stream_cut_after_shown_text_is_an_error() -> None:
    shown: list[str] = []
    with breaking_server(broken=1) as (url, served), pytest.raises(ClientError) as caught:
        openai_client.run(target(url), ["capital of France?"], stream=True, on_text=lambda _, t: shown.append(t))
    assert "closed after 3 characters, before its end" in str(caught.value)
    assert shown == ["Par"] and len(served) == 1


def test_an_error_event_midway_is_an_error_though_the_stream_ends_properly() -> None:
    """vinolm's server sends the error, then ``[DONE]``: the client took that for a whole answer."""
    error = _event({"error": {"message": "the engine failed", "type": "engine_error"}}) + _event("[DONE]")
    with breaking_server(broken=1, tail=error + b"0\r\n\r\n") as (url, _), pytest.raises(ClientError) as caught:
        openai_client.run(target(url), ["capital of France?"], stream=True)
    assert "failed midway: the engine failed" in str(caught.value)


def test_a_server_that_never_answers_is_an_error_line_not_a_hang(monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx

    from vinolm.client import kserve_rest

    silent = socket.create_server(("127.0.0.1", 0))  # the kernel accepts; nobody ever answers
    url = f"http://127.0.0.1:{silent.getsockname()[1]}"
    try:
        for run, module in ((lambda: openai_client.run(target(url), ["hi"], True), openai_client),
                            (lambda: openai_client.run(target(url), ["hi"], False), openai_client),
                            (lambda: kserve_rest.run(target(url), ["hi"]), kserve_rest)):
            monkeypatch.setattr(module, "TIMEOUT", httpx.Timeout(0.5, connect=5.0))
            with pytest.raises(ClientError, match=f"{url} sent nothing for 0 s"):
                run()
    finally:
        silent.close()
