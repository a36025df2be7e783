"""``vinolm client`` retries what got no token yet, against a real server that is not up
yet, and gives up visibly (one line, exit 1) on one that keeps refusing."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from tests.e2e.conftest import free_port, start_server

pytestmark = pytest.mark.slow
PROMPT = "What is the capital of France?"


def client(*args: str) -> subprocess.Popen[str]:
    script = Path(sys.executable).with_name("vinolm")
    return subprocess.Popen([str(script), "client", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@pytest.mark.parametrize("protocol", ["openai", "kserve-rest", "grpc"])
def test_a_client_started_before_the_server_gets_its_answer(protocol: str) -> None:
    http_port, grpc_port = free_port(), free_port()
    url = f"127.0.0.1:{grpc_port if protocol == 'grpc' else http_port}"
    waiting = client("--protocol", protocol, "--url", url, "--retries", "12", "--max-tokens", "8", "-p", PROMPT)
    time.sleep(1.0)  # refused at least once before anything listens
    assert waiting.poll() is None, waiting.communicate()
    with start_server("--no-ui", "--port", str(http_port), "--grpc-port", str(grpc_port)):
        out, err = waiting.communicate(timeout=180)
    assert waiting.returncode == 0, err
    tokens = int(out.split("Number of tokens: ")[1].split()[0])
    assert 0 < tokens <= 8, out  # the client's default sampling: any answer, but a whole one


def test_a_draining_server_is_retried_then_reported() -> None:
    with start_server("--no-ui", "--drain-timeout", "60") as server:
        long = threading.Thread(target=httpx.post, kwargs={
            "url": f"{server.base_url}/v1/completions", "timeout": 120,
            "json": {"prompt": "Once upon a time", "max_tokens": 1000, "ignore_eos": True, "temperature": 0}})
        long.start()
        deadline = time.monotonic() + 30
        while "vinolm_requests_running 1" not in httpx.get(f"{server.base_url}/metrics").text:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        server.process.send_signal(signal.SIGTERM)  # drains: the long request keeps running
        while httpx.get(f"{server.base_url}/v2/health/ready").status_code == 200:
            time.sleep(0.05)
        refused = client("--protocol", "openai", "--url", server.host_port, "--retries", "2", "-p", PROMPT)
        _, err = refused.communicate(timeout=60)
        long.join(120)
        server.process.wait(timeout=90)  # the drain ends on its own: a second SIGTERM from the fixture
        # while uvicorn shuts down would be re-raised by it after shutdown (exit -15)
    assert refused.returncode == 1 and err.strip().splitlines() == [err.strip()], err
    assert "503" in err and "shutting down" in err
    posts = [line for line in server.access_log if '"/v1/chat/completions"' in line and '"status": 503' in line]
    assert len(posts) == 3, server.access_log  # the first try and two retries
