"""``python -m vinolm.bench.server --replicas``: the flags that start vinolm serve on Ray."""

from __future__ import annotations

import pytest

from vinolm.bench.server import label_of, parse_args, ray_flags


def test_replicas_put_the_started_server_on_ray_and_name_the_rows() -> None:
    args = parse_args(["--replicas", "2", "--ray-cpus", "4"])
    assert ray_flags(args) == ["--replicas", "2", "--threads-per-replica", "1", "--ray-cpus", "4"]
    assert label_of(args) == "vinolm serve Ray 2x1 thread(s) (openai)"


def test_without_replicas_the_plain_process() -> None:
    args = parse_args([])
    assert ray_flags(args) == [] and label_of(args) == "vinolm serve (openai)"


@pytest.mark.parametrize("other", [["--url", "http://127.0.0.1:8000"], ["--llama-server", "m.gguf"]])
def test_replicas_only_for_the_server_started_here(other: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--replicas", "2", *other])
