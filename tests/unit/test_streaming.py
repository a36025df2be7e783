"""Incremental detokenization: multi-byte characters split across tokens, stop strings
split across tokens, and a per-token cost that does not grow with the output."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from vinolm.engines.streaming import TextStreamer

TEXTS = [
    "你好，世界！今天天气很好。",
    "こんにちは、世界。カタカナとひらがな。",
    "emoji 👍🏽 and a family 👨‍👩‍👧 done 🎉",
    "mixed: naïve café — 日本語 ok",
]


def byte_chunks(text: str, size: int) -> tuple[list[int], Callable[[list[int]], str]]:
    """A byte-level tokenizer whose tokens are ``size``-byte slices of the text, so
    characters split across tokens and one token can end one character and start
    the next. Decoding replaces broken bytes with U+FFFD, as HF tokenizers do."""
    data = text.encode("utf-8")
    chunks = [data[i : i + size] for i in range(0, len(data), size)]

    def detokenize(ids: list[int]) -> str:
        return b"".join(chunks[i] for i in ids).decode("utf-8", errors="replace")

    return list(range(len(chunks))), detokenize


def stream(streamer: TextStreamer, ids: list[int]) -> list[str]:
    deltas = [streamer.push(i) for i in ids]
    return [*deltas, streamer.flush()]


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("size", [1, 2, 3])
def test_multibyte_text_streams_whole_and_never_broken(text: str, size: int) -> None:
    ids, detokenize = byte_chunks(text, size)
    deltas = stream(TextStreamer(detokenize), ids)
    assert "".join(deltas) == text
    assert not any("\ufffd" in d for d in deltas)


def test_a_split_character_is_held_until_complete() -> None:
    ids, detokenize = byte_chunks("a你", 1)
    streamer = TextStreamer(detokenize)
    assert [streamer.push(i) for i in ids] == ["a", "", "", "你"]


@pytest.mark.parametrize("size", [1, 2, 3])
def test_stop_string_split_across_tokens_never_leaks(size: int) -> None:
    text = "答案是四十二。### End\nignored 你好"
    ids, detokenize = byte_chunks(text, size)
    streamer = TextStreamer(detokenize, stop_strings=["### End"])
    deltas = stream(streamer, ids)
    assert "".join(deltas) == "答案是四十二。"
    assert streamer.stopped


def test_text_that_only_begins_like_a_stop_string_is_released() -> None:
    text = "### Title\nbody ## x\n### Endnote? no: ### End rest"
    ids, detokenize = byte_chunks(text, 1)
    streamer = TextStreamer(detokenize, stop_strings=["### End"])
    out = ""
    for i in ids:
        out += streamer.push(i)
        if out.endswith("### T"):
            break
        assert not out.endswith("#"), "a possible stop string was emitted too early"
    assert out == "### T"
    rest = [streamer.push(i) for i in ids[len(out) :]]
    assert out + "".join(rest) == "### Title\nbody ## x\n"
    assert streamer.stopped


def test_shorter_stop_string_wins_when_it_completes_first() -> None:
    ids, detokenize = byte_chunks("intro ### End", 1)
    streamer = TextStreamer(detokenize, stop_strings=["### End", "###"])
    assert "".join(stream(streamer, ids)) == "intro "


def test_when_one_token_completes_two_stop_strings_the_earlier_start_wins() -> None:
    ids, detokenize = byte_chunks("xyzabc", 3)
    streamer = TextStreamer(detokenize, stop_strings=["bc", "abc"])
    assert "".join(stream(streamer, ids)) == "xyz"


def test_after_a_stop_nothing_more_is_emitted() -> None:
    ids, detokenize = byte_chunks("abcSTOPdef", 1)
    streamer = TextStreamer(detokenize, stop_strings=["STOP"])
    deltas = [streamer.push(i) for i in ids]
    assert "".join(deltas) == "abc"
    assert deltas[ids.index(6) :] == ["", "", "", ""]  # from the final "P" on
    assert streamer.flush() == ""


def test_stop_completing_inside_a_token_that_starts_a_character_stops_at_once() -> None:
    ids, detokenize = byte_chunks("xxEND你", 2)  # tokens: xx | EN | D+first byte of 你 | ...
    streamer = TextStreamer(detokenize, stop_strings=["END"])
    assert [streamer.push(i) for i in ids[:3]] == ["xx", "", ""]
    assert streamer.stopped


def test_flush_releases_a_held_possible_stop_prefix() -> None:
    ids, detokenize = byte_chunks("value ##", 1)
    streamer = TextStreamer(detokenize, stop_strings=["###"])
    deltas = stream(streamer, ids)
    assert deltas[-1] == "##"
    assert "".join(deltas) == "value ##"
    assert not streamer.stopped


def test_flush_without_tokens_does_not_decode_an_empty_list() -> None:
    def detokenize(ids: list[int]) -> str:
        assert ids, "detokenizers may reject an empty list"
        return "x" * len(ids)

    assert TextStreamer(detokenize, ["stop"]).flush() == ""


WORDS = ["▁Hello", "▁world", ",", "▁how", "▁are", "▁you", "?"]


def sentencepiece_detokenize(ids: list[int]) -> str:
    """Like SentencePiece: '▁' is a space, and a leading space is dropped."""
    return "".join(WORDS[i] for i in ids).replace("▁", " ").removeprefix(" ")


def test_window_keeps_spaces_that_decoding_one_token_would_drop() -> None:
    deltas = stream(TextStreamer(sentencepiece_detokenize), [0, 1, 2, 3, 4, 5, 6])
    assert "".join(deltas) == "Hello world, how are you?"


def test_prompt_context_keeps_the_first_space() -> None:
    streamer = TextStreamer(sentencepiece_detokenize, prompt_ids=[3, 4])
    assert "".join(stream(streamer, [5, 6])) == " you?"


def test_cost_per_token_does_not_grow_with_the_output() -> None:
    text = "The quick brown fox jumps over the lazy dog. 日本語も。" * 40
    ids, detokenize = byte_chunks(text, 1)
    decoded_lengths: list[int] = []

    def counting(ids_: list[int]) -> str:
        decoded_lengths.append(len(ids_))
        return detokenize(ids_)

    assert "".join(stream(TextStreamer(counting, stop_strings=["NEVER"]), ids)) == text
    assert max(decoded_lengths) <= 8  # previous + current character, 4 bytes each
