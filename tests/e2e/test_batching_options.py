"""``vinolm serve --kv-cache-gb 0 --max-batched-tokens N``: a KV cache genai grows as requests
need it, and prompts prefilled a few tokens a step between the other streams' tokens. Real
server, real OpenAI SDK, requests at once whose prompts take several steps each."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from tests.e2e.conftest import start_server

pytestmark = pytest.mark.slow
PIECE = 16


def test_grown_cache_and_small_prefill_pieces_answer_every_request() -> None:
    with start_server("--no-ui", "--kv-cache-gb", "0", "--max-batched-tokens", str(PIECE)) as server:
        client = openai.OpenAI(base_url=server.openai_url, api_key="unused", max_retries=0)
        passage = " ".join(f"Line {i} says the river runs north past the mill." for i in range(12))

        def ask(i: int) -> openai.types.chat.ChatCompletion:
            return client.chat.completions.create(
                model="smollm2-135m", temperature=0, max_tokens=24,
                messages=[{"role": "user", "content": f"Text {i}: {passage}\nWhich way does the river run?"}],
            )

        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(ask, range(4)))
        assert any("KV cache grown as needed, shared by its requests" in line for line in server.log), server.tail()
    for answer in answers:
        assert answer.usage is not None and answer.usage.prompt_tokens > 8 * PIECE
        assert answer.choices[0].finish_reason in ("stop", "length")
        assert answer.choices[0].message.content
