"""``vinolm generate`` as a new user types it: a question gets an answer, because the prompt
goes in the model's chat format unless ``--raw`` asks for a bare continuation."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import pytest

from vinolm.models import PreparedModel

pytestmark = pytest.mark.slow
Cli = Callable[..., subprocess.CompletedProcess[str]]
QUESTION = "What is the capital of France?"


def generate(vinolm: Cli, model: PreparedModel, *extra: str) -> subprocess.CompletedProcess[str]:
    done = vinolm("generate", QUESTION, "--model", str(model.path), "--greedy", "--max-new-tokens", "32", *extra,
                  timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_a_question_gets_an_answer(vinolm: Cli, default_model: PreparedModel) -> None:
    done = generate(vinolm, default_model)
    assert "Paris" in done.stdout
    assert "generated tokens" in done.stderr and "ended the text at once" not in done.stderr


def test_chat_flag_and_json_give_the_same_answer(vinolm: Cli, default_model: PreparedModel) -> None:
    plain = generate(vinolm, default_model).stdout.strip()
    assert generate(vinolm, default_model, "--chat").stdout.strip() == plain
    result = json.loads(generate(vinolm, default_model, "--json").stdout)
    assert result["text"] == plain and result["finish_reason"] == "stop" and result["metrics"]["output_tokens"] > 0


def test_raw_continues_the_text_and_says_when_it_is_empty(vinolm: Cli, default_model: PreparedModel) -> None:
    """The 135M instruct model ends a bare question at once (EOS): the user is told why."""
    done = generate(vinolm, default_model, "--raw")
    if done.stdout.strip():
        assert "ended the text at once" not in done.stderr
    else:
        lines = [line for line in done.stderr.splitlines() if "ended the text at once" in line]
        assert len(lines) == 1 and "drop --raw" in lines[0]


def test_raw_and_chat_exclude_each_other(vinolm: Cli) -> None:
    done = vinolm("generate", QUESTION, "--raw", "--chat")
    assert done.returncode == 2 and "not allowed" in done.stderr
