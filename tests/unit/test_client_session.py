"""The clients name a conversation the way Ray Serve's proxies read it (``x-session-id``),
so ``vinolm serve --replicas`` keeps it on one replica."""

from __future__ import annotations

import pytest

from vinolm.client.common import SESSION_HEADER, Target, request_headers


def test_the_session_and_the_api_key_go_in_every_request() -> None:
    headers = request_headers(Target(url="u", model="m", api_key="k", session="chat-42"))
    assert headers == {"Authorization": "Bearer k", SESSION_HEADER: "chat-42"}


def test_no_session_no_header() -> None:
    assert request_headers(Target(url="u", model="m")) == {}


def test_the_header_is_the_one_ray_serve_reads() -> None:
    constants = pytest.importorskip("ray.serve._private.constants")
    assert constants.SERVE_SESSION_ID == SESSION_HEADER
