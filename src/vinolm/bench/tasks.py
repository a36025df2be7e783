"""The work a benchmark asks of a chat model, beside the filler prompts of ``schema``:
input-grounded tasks (where prompt lookup pays) and free generation (where it should cost
nothing). ``bench.interleave`` runs them one stream at a time, ``bench.server`` through a
server at a concurrency."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

TASKS = ("filler", "rewrite", "copy", "story")
#: The grounded tasks' text: prose that stays put. Passages of this repository's docs, used
#: until 2026-12-05, changed with every edit and had become mostly commands and tables,
#: which the 135M default model does not copy.
GROUNDED = Path(__file__).with_name("grounded.txt")
#: What the grounded tasks ask of a passage. ``copy`` is the one the 135M default model
#: does most faithfully (its answers to "extract" or "list the facts" loop on a phrase, which
#: would flatter prompt lookup with repetition instead of grounding).
INSTRUCTIONS = {"rewrite": "Rewrite the text above in your own words.",
                "copy": "Repeat the text above exactly, word for word."}
STORIES = ("a dragon who learns to cook", "a lighthouse keeper and a storm", "two robots who start a bakery",
           "a girl who finds a map in a library book", "a city where it never stops snowing")


def task_prompts(task: str, tokens: int) -> Callable[[int], str]:
    """The ``variant``-th user message of ``task``: whole paragraphs of about ``tokens``
    tokens (4 characters each; at most the whole text, never a paragraph twice, which would
    flatter prompt lookup), from the ``variant``-th on, to rewrite or copy, or a story to
    write."""
    if task == "story":
        return lambda variant: f"Write a long story about {STORIES[variant % len(STORIES)]}."
    paragraphs = GROUNDED.read_text(encoding="utf-8").strip().split("\n\n")
    ask = INSTRUCTIONS[task]

    def message(variant: int) -> str:
        passage: list[str] = []
        for i in range(variant, variant + len(paragraphs)):
            if sum(len(p) for p in passage) >= tokens * 4:
                break
            passage.append(paragraphs[i % len(paragraphs)])
        return "\n\n".join(passage) + f"\n\n{ask}"

    return message
