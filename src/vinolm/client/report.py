"""The clients' printout: the completions, then the OVMS demo clients' measurements.

Token rates are measured from the client's side over the whole run (network, queueing
and prompt processing included), like the demo's, so they are comparable between
protocols and with the demo's published numbers.
"""

from __future__ import annotations

from vinolm.client.common import RunResult


def completions_text(result: RunResult) -> str:
    """One prompt: the question and its answer; several: a titled block per prompt."""
    if len(result.prompts) == 1:
        return f"Question:\n{result.prompts[0]}\n\nCompletion:\n{result.completions[0]}\n"
    return "".join(
        f"==== Prompt: {prompt} ====\n{completion}\n\n"
        for prompt, completion in zip(result.prompts, result.completions)
    )


def metrics_lines(result: RunResult, stream: bool) -> list[str]:
    tokens = sum(result.token_counts)
    total = result.total_time
    per_second = tokens / total if total > 0 else 0.0
    per_token_ms = 1000 * total / tokens if tokens else 0.0
    lines = [
        f"Number of tokens: {tokens}",
        f"Generated tokens per second: {per_second:.2f}",
        f"Time per generated token: {per_token_ms:.2f} ms",
        f"Total time: {1000 * total:.0f} ms",
    ]
    if stream:
        gaps = result.response_times
        first = 1000 * gaps[0] if gaps else 0.0
        average = 1000 * sum(gaps) / len(gaps) if gaps else 0.0
        lines += [
            f"Number of responses: {len(gaps)}",
            f"First response time: {first:.0f} ms",
            f"Average response time: {average:.2f} ms",
        ]
    return lines
