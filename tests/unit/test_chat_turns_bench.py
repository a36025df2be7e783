"""The chat-turns benchmark: its filler text, its table, and one tiny real run.

The pure parts run without OpenVINO; the real run (two turns, a few tokens) is slow-marked
and checks the shape of the JSON the docs table is made from.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from vinolm.bench import chat_turns
from vinolm.bench.chat_turns import REENCODE, Report, Row, filler, markdown, median_rows


def words(text: str) -> list[int]:
    """A stand-in tokenizer: one token per word."""
    return list(range(len(text.split())))


def test_filler_is_long_enough_deterministic_and_different_per_turn() -> None:
    first = filler(1, 60, words)
    assert len(first.split()) >= 60
    assert filler(1, 60, words) == first
    assert filler(2, 60, words) != first
    assert not set(first.split(". ")[1:-1]) & set(filler(2, 60, words).split(". ")[1:-1]), (
        "turns share no sentence, so only real history can hit the cache"
    )


def _report(ttfts: list[tuple[float, float]]) -> Report:
    rows = [Row(i, 100 * i, {"genai prefix cache": ours, REENCODE: full})
            for i, (ours, full) in enumerate(ttfts, 1)]
    return Report("tiny", 150, 64, 1, rows)


def test_ratios_compare_the_last_turn_with_the_first() -> None:
    ratios = _report([(0.2, 0.2), (0.25, 0.9), (0.28, 1.6)]).ratios()
    assert ratios == pytest.approx({"genai prefix cache": 1.4, REENCODE: 8.0})


def test_markdown_has_one_row_per_turn_and_judges_only_the_cache_variants() -> None:
    table = markdown(_report([(0.2, 0.2), (0.4, 1.0)]))
    lines = table.splitlines()
    assert lines[0] == "| turn | prompt tokens | TTFT genai prefix cache (ms) | TTFT re-encode (ms) |"
    assert lines[2:4] == ["| 1 | 100 | 200 | 200 |", "| 2 | 200 | 400 | 1000 |"]
    assert "- turn 2 / turn 1 TTFT, genai prefix cache: 2.00x (misses the 1.5x target)" in lines
    assert "- turn 2 / turn 1 TTFT, re-encode: 5.00x" in lines


def test_repeated_runs_are_combined_by_median_per_turn_and_variant() -> None:
    runs = [_report([(0.1, 1.0), (0.3, 2.0)]).rows, _report([(0.5, 3.0), (0.2, 9.0)]).rows,
            _report([(0.2, 2.0), (0.4, 4.0)]).rows]
    rows = median_rows(runs)
    assert [row.turn for row in rows] == [1, 2]
    assert rows[0].ttft == {"genai prefix cache": 0.2, REENCODE: 2.0}
    assert rows[1].ttft == {"genai prefix cache": 0.3, REENCODE: 4.0}


def test_native_joins_the_default_variants_only_when_it_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chat_turns, "native_available", lambda: False)
    assert chat_turns.parse_args([]).engine == ["genai"]
    monkeypatch.setattr(chat_turns, "native_available", lambda: True)
    assert chat_turns.parse_args([]).engine == ["genai", "native"]
    assert chat_turns.parse_args(["--engine", "genai"]).engine == ["genai"]
    with pytest.raises(SystemExit):
        chat_turns.parse_args(["--turns", "0"])


def test_ov_config_is_parsed_for_the_in_process_engines_only(capsys: pytest.CaptureFixture[str]) -> None:
    args = chat_turns.parse_args(["--engine", "genai", "--ov-config", "KV_CACHE_PRECISION=u8",
                                  "--ov-config", "DYNAMIC_QUANTIZATION_GROUP_SIZE=32"])
    assert args.ov_config == {"KV_CACHE_PRECISION": "u8", "DYNAMIC_QUANTIZATION_GROUP_SIZE": 32}
    for argv, said in ((["--ov-config", "KV_CACHE_PRECISION"], "KEY=VALUE"),
                       (["--url", "http://127.0.0.1:1", "--ov-config", "A=1"], "--ov-config set up in-process"),
                       (["--url", "notaurl:99999"], "bad --url 'notaurl:99999'")):
        with pytest.raises(SystemExit) as exit_:
            chat_turns.parse_args(argv)
        assert exit_.value.code == 2 and said in capsys.readouterr().err
    assert chat_turns.parse_args(["--url", "127.0.0.1:8000/"]).url == "http://127.0.0.1:8000"


@pytest.mark.slow
def test_a_tiny_real_run_prints_a_row_per_turn() -> None:
    command = [sys.executable, "-m", "vinolm.bench.chat_turns", "--turns", "2", "--turn-tokens", "16",
               "--new-tokens", "4", "--engine", "genai", "--ov-config", "KV_CACHE_PRECISION=u8", "--json"]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    labels = {"genai prefix cache", REENCODE}
    assert [row["turn"] for row in report["rows"]] == [1, 2]
    assert report["rows"][1]["prompt_tokens"] > report["rows"][0]["prompt_tokens"] >= 16
    assert all(set(row["ttft"]) == labels and min(row["ttft"].values()) > 0 for row in report["rows"])
    assert set(report["ratios"]) == labels and report["target_ratio"] == 1.5
    assert report["ov_config"] == {"KV_CACHE_PRECISION": "u8"}


@pytest.mark.slow
def test_a_property_openvino_refuses_is_one_line_not_a_traceback() -> None:
    command = [sys.executable, "-m", "vinolm.bench.chat_turns", "--turns", "1", "--turn-tokens", "16",
               "--new-tokens", "4", "--engine", "genai", "--ov-config", "NO_SUCH_PROPERTY=1"]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and done.stdout == ""  # the user's property: exit 2, as for vinolm
    error = [line for line in done.stderr.splitlines() if not line.startswith("vinolm: ")]  # prepare's progress
    assert len(error) == 1 and error[0].startswith("python -m vinolm.bench.chat_turns: error: ")
    assert "NO_SUCH_PROPERTY" in error[0]


def _sse(*events: object) -> bytes:
    return b"".join(f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n".encode() for e in events)


def test_a_served_turn_is_timed_at_its_first_text_and_names_its_replica() -> None:
    import httpx

    from vinolm.bench.chat_turns import stream_turn

    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        assert body["stream"] and body["messages"][-1] == {"role": "user", "content": "hi"}
        events = _sse({"choices": [{"delta": {"role": "assistant"}}]}, {"choices": [{"delta": {"content": "Hel"}}]},
                      {"choices": [{"delta": {"content": "lo"}}]},
                      {"choices": [], "usage": {"prompt_tokens": 42, "completion_tokens": 2}}, "[DONE]")
        return httpx.Response(200, headers={"x-vinolm-replica": "r1"}, content=events)

    with httpx.Client(base_url="http://server", transport=httpx.MockTransport(answer)) as http:
        turn, reply = stream_turn(http, "m", [{"role": "user", "content": "hi"}], 8)
    assert reply == "Hello" and turn.prompt_tokens == 42 and turn.replica == "r1" and turn.ttft > 0


@pytest.mark.parametrize(("status", "events", "said"), [
    (200, _sse({"choices": [{"delta": {"role": "assistant"}}]}, {"choices": [{"delta": {"content": ""}}]}, "[DONE]"),
     "http://server answered a turn with no text"),
    (503, b'{"error": {"message": "busy"}}', "http://server answered HTTP 503"),
])
def test_a_served_turn_without_text_is_an_error_not_a_zero(status: int, events: bytes, said: str) -> None:
    import httpx

    from vinolm.bench.chat_turns import stream_turn
    from vinolm.errors import EngineError

    transport = httpx.MockTransport(lambda _: httpx.Response(status, content=events))
    with httpx.Client(base_url="http://server", transport=transport) as http, pytest.raises(EngineError) as error:
        stream_turn(http, "m", [{"role": "user", "content": "hi"}], 8)
    assert error.value.message.startswith(said)


def test_placement_counts_follow_ups_on_the_same_replica() -> None:
    from vinolm.bench.chat_turns import ServedTurn, stayed

    def chat(*replicas: str) -> list[ServedTurn]:
        return [ServedTurn(0.1, 10, replica) for replica in replicas]

    assert stayed([chat("a", "a", "b"), chat("b", "b", "b")]) == (
        "3/4 follow-up turns on the previous turn's replica; conversations per replica [1, 1]")


def test_a_server_run_takes_no_engine() -> None:
    assert chat_turns.parse_args(["--url", "http://127.0.0.1:8000"]).conversations == 4
    with pytest.raises(SystemExit):
        chat_turns.parse_args(["--url", "http://127.0.0.1:8000", "--engine", "genai"])
