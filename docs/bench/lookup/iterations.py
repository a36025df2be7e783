"""openvino-genai's prompt lookup, iteration by iteration (seventeenth session, Intel Xeon with AMX).

Each copy-task text is answered by a plain ContinuousBatchingPipeline and by one with prompt
lookup, in one process. genai's streamer gets the tokens each iteration accepted in one write,
so the writes count the iterations: tokens per iteration, and an iteration's time in plain
token steps, say what bounds the speed-up (speed-up ~ tokens per iteration / steps per
iteration).

    python iterations.py FOLDER PROPERTIES_JSON PROPOSED TEXTS
"""

import json
import statistics
import sys
import time

import openvino_genai as g

from vinolm.bench.tasks import task_prompts


class Stamps(g.StreamerBase):
    """When each write came and how many tokens it carried."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[float, int]] = []

    def write(self, token):  # an int, or the list one iteration accepted
        self.writes.append((time.perf_counter(), len(token) if isinstance(token, list) else 1))
        return g.StreamingStatus.RUNNING

    def end(self) -> None:
        pass


def pipeline(folder: str, props: dict) -> g.ContinuousBatchingPipeline:
    config = g.SchedulerConfig()
    config.cache_size, config.enable_prefix_caching = 1, False
    return g.ContinuousBatchingPipeline(folder, config, "CPU", props)


def answer(pipe, prompt: str, proposed: int) -> tuple[list[tuple[float, int]], list[str]]:
    config = g.GenerationConfig()
    config.max_new_tokens = 128
    if proposed:
        config.num_assistant_tokens, config.max_ngram_size = proposed, 6
    stamps = Stamps()
    result = pipe.generate([prompt], [config], stamps)[0]
    return stamps.writes, result.m_generation_ids


def main(folder: str, props: dict, proposed: int, texts: int) -> None:
    plain, lookup = pipeline(folder, props), pipeline(folder, {**props, "prompt_lookup": True})
    tokenizer, message = g.Tokenizer(folder), task_prompts("copy", 700)
    rows = []
    for v in range(texts):
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": message(v)}], add_generation_prompt=True)
        w0, a0 = answer(plain, prompt, 0)
        w1, a1 = answer(lookup, prompt, proposed)
        n0, n1 = sum(n for _, n in w0), sum(n for _, n in w1) - w1[0][1]  # tokens after the first write
        step = (w0[-1][0] - w0[0][0]) / (n0 - 1)
        gaps = [b[0] - a[0] for a, b in zip(w1, w1[1:])]
        per_iteration, iteration = n1 / max(1, len(gaps)), statistics.median(gaps) / step
        speedup = step / ((w1[-1][0] - w1[0][0]) / n1)
        print(f"text {v}: plain {n0} tok, step {step * 1e3:.2f} ms; lookup {n1 + w1[0][1]} tok in {len(w1)} writes, "
              f"{per_iteration:.2f} tok/iter, iteration median {statistics.median(gaps) * 1e3:.2f} ms = "
              f"{iteration:.2f} steps; speed-up {speedup:.2f}x; same {a0 == a1}")
        rows.append((per_iteration, iteration, speedup, a0 == a1, step))

    def median(i: int) -> float:
        return statistics.median(r[i] for r in rows)

    print(f"medians over {len(rows)} texts: step {median(4) * 1e3:.2f} ms, {median(0):.2f} tokens per iteration, "
          f"an iteration {median(1):.2f} steps, speed-up {median(2):.2f}x, same answers {sum(r[3] for r in rows)} "
          f"of {len(rows)}")


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
