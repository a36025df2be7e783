"""The clients' retry rule: only what got no token yet is sent again, with backoff."""

from __future__ import annotations

import asyncio

import pytest

from vinolm.client.common import ClientError, Retryable, RetryPolicy, aretrying, raise_for_status, retrying

FAST = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.01)


def flaky(failures: list[BaseException]) -> tuple[list[int], object]:
    calls: list[int] = []

    def call() -> str:
        calls.append(1)
        if failures:
            raise failures.pop(0)
        return "answer"

    return calls, call


def test_retryable_failures_are_tried_again_until_the_budget_ends() -> None:
    calls, call = flaky([Retryable("503"), Retryable("refused")])
    assert retrying(FAST, call) == "answer" and len(calls) == 3  # type: ignore[arg-type]
    calls, call = flaky([Retryable("a"), Retryable("b"), Retryable("c")])
    with pytest.raises(Retryable, match="c"):
        retrying(FAST, call)  # type: ignore[arg-type]
    assert len(calls) == 3


def test_other_failures_are_not_retried() -> None:
    calls, call = flaky([ClientError("400: bad field")])
    with pytest.raises(ClientError, match="bad field"):
        retrying(FAST, call)  # type: ignore[arg-type]
    assert len(calls) == 1


def test_async_twin() -> None:
    attempts: list[int] = []

    async def call() -> int:
        attempts.append(1)
        if len(attempts) < 2:
            raise Retryable("closed before its first token")
        return 7

    assert asyncio.run(aretrying(FAST, call)) == 7 and len(attempts) == 2


def test_backoff_is_jittered_capped_and_honours_retry_after() -> None:
    policy = RetryPolicy(attempts=10, base_delay=0.5, max_delay=4.0)
    delays = [policy.delay(attempt, None) for attempt in range(10) for _ in range(20)]
    assert all(0 <= d <= 4.0 for d in delays) and len(set(delays)) > 100
    assert all(policy.delay(0, 2.0) >= 2.0 for _ in range(20))
    assert policy.delay(0, 60.0) == 4.0  # never longer than the cap


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_statuses_where_nothing_was_generated_are_retryable(status: int) -> None:
    with pytest.raises(Retryable) as caught:
        raise_for_status(status, b'{"error": {"message": "busy"}}', "3")
    assert caught.value.retry_after == 3.0 and "busy" in caught.value.message


@pytest.mark.parametrize("status", [400, 401, 404, 500])
def test_other_statuses_are_final(status: int) -> None:
    with pytest.raises(ClientError) as caught:
        raise_for_status(status, b'{"error": "nope"}')
    assert not isinstance(caught.value, Retryable)


@pytest.mark.parametrize("body", [b"Internal Server Error", b"", b"<html>oops</html>", b'{"detail": "x"}'])
def test_a_500_without_vinolms_error_body_is_a_proxy_failure_and_retryable(body: bytes) -> None:
    """Ray Serve's proxy answers a bare 500 when the replica died before its first byte."""
    with pytest.raises(Retryable) as caught:
        raise_for_status(500, body)
    assert "500" in caught.value.message


@pytest.mark.parametrize("body", [b'{"error": {"message": "boom", "type": "server_error"}}', b'{"error": "boom"}'])
def test_a_500_in_vinolms_own_error_shape_is_final(body: bytes) -> None:
    with pytest.raises(ClientError) as caught:
        raise_for_status(500, body)
    assert not isinstance(caught.value, Retryable) and "boom" in caught.value.message


def test_a_page_of_html_is_one_line_of_error() -> None:
    with pytest.raises(ClientError) as caught:
        raise_for_status(501, b"<html>\n  <body>\n    <h1>Error</h1>\n</body></html>")
    assert caught.value.message == "the server answered 501: <html> <body> <h1>Error</h1> </body></html>"
