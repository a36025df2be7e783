"""A real ``vinolm serve`` in a subprocess, shared by every end-to-end test of the session.

``server`` serves the default model (web UI included) without an API key;
``server_with_key`` requires ``API_KEY`` and has no UI (it starts faster). Each starts on
first use and stops at the end of the session with SIGTERM, which must exit cleanly. Both
listen on 127.0.0.1: HTTP on a port the OS picks (announced on the "ready" line, so there
is no port race), gRPC on a free port found beforehand.
``start_server(...)`` starts a private one with any extra arguments.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

API_KEY = "e2e-secret-key"
START_TIMEOUT = 180  # a first load may compile the model into the cache
_READY = re.compile(r"vinolm: ready: (http://\S+)")


@dataclass
class RunningServer:
    base_url: str  # http://127.0.0.1:PORT
    grpc_port: int
    api_key: str | None
    process: subprocess.Popen[str]
    log: list[str] = field(default_factory=list)  # stderr so far
    access_log: list[str] = field(default_factory=list)  # stdout: one JSON line per request

    @property
    def openai_url(self) -> str:
        return f"{self.base_url}/v1"

    @property
    def host_port(self) -> str:
        return self.base_url.removeprefix("http://")

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log[-lines:])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _vinolm_command() -> list[str]:
    script = Path(sys.executable).with_name("vinolm")
    return [str(script)] if script.exists() else [sys.executable, "-m", "vinolm.cli"]


def _drain(stream: object, sink: list[str], ready: threading.Event | None, found: list[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        sink.append(line.rstrip("\n"))
        match = _READY.search(line) if ready is not None else None
        if match and ready is not None:
            found.append(match.group(1))
            ready.set()
    if ready is not None:
        ready.set()  # the process ended: wake the waiter, which then sees no URL


@contextmanager
def start_server(*extra: str, api_key: str | None = None) -> Iterator[RunningServer]:
    """Start ``vinolm serve`` and yield once it listens; stop it with SIGTERM afterwards."""
    grpc_port = free_port()
    command = [*_vinolm_command(), "serve", "--host", "127.0.0.1", "--port", "0", "--grpc-port", str(grpc_port),
               "--max-concurrency", "8", "--max-queue", "16", "--max-tokens-limit", "1024", *extra]
    if api_key:
        command += ["--api-key", api_key]
    env = {k: v for k, v in os.environ.items() if k != "VINOLM_API_KEY"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    server = RunningServer("", grpc_port, api_key, process)
    ready, found = threading.Event(), []
    threads = [threading.Thread(target=_drain, args=(process.stderr, server.log, ready, found), daemon=True),
               threading.Thread(target=_drain, args=(process.stdout, server.access_log, None, []), daemon=True)]
    for thread in threads:
        thread.start()
    started = False
    try:
        if not ready.wait(START_TIMEOUT) or not found:
            pytest.fail(f"vinolm serve did not become ready:\n{server.tail()}")
        server.base_url, started = found[0], True
        yield server
    finally:
        _stop(server, check_exit=started)


def _stop(server: RunningServer, check_exit: bool = True) -> None:
    process = server.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail(f"vinolm serve ignored SIGTERM for 30 s:\n{server.tail()}")
    if check_exit:
        assert process.returncode == 0, f"vinolm serve exited with {process.returncode}:\n{server.tail()}"


@pytest.fixture(scope="session")
def server() -> Iterator[RunningServer]:
    with start_server() as running:
        yield running


@pytest.fixture(scope="session")
def server_with_key() -> Iterator[RunningServer]:
    with start_server("--no-ui", api_key=API_KEY) as running:
        yield running
