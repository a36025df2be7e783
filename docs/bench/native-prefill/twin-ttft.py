"""The native engine's time to first token with and without its stateless prefill twin, in one
process, alternating run by run, each run a new prompt (the rewrite task's paragraphs from the
run's own one on), with the genai engine as the reference. Throwaway measurement for
docs/benchmarks.md section 22: ``python twin-ttft.py [model] [runs]``."""
import statistics
import sys

import vinolm
from vinolm.bench.tasks import task_prompts
from vinolm.engines import native_model
from vinolm.types import GenerationParams, Message, Request

model = sys.argv[1] if len(sys.argv) > 1 else "smollm2-135m"
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 7
native = vinolm.load(model, engine="native").engine
genai = vinolm.load(model, engine="genai").engine
assert native.lm.twin is not None, "no twin here (the model does not compute in f32)"
twin_min = native_model.TWIN_MIN_PROMPT
rows = {"native, twin": (native, twin_min), "native, stateful prefill": (native, 10**9), "genai": (genai, twin_min)}
for size in (300, 900):
    prompts = task_prompts("rewrite", size)
    ttft: dict[str, list[float]] = {name: [] for name in rows}
    tokens = 0
    for run in range(runs + 1):  # the first is a warm-up
        for name, (engine, threshold) in rows.items():
            native_model.TWIN_MIN_PROMPT = threshold
            request = Request(messages=[Message("user", prompts(run * 3 + list(rows).index(name)))],
                              params=GenerationParams(max_new_tokens=4, temperature=0.0))
            result = engine.complete(request)
            tokens = result.metrics.input_tokens
            if run:
                ttft[name].append(result.metrics.ttft * 1e3)
    base = statistics.median(ttft["native, stateful prefill"])
    print(f"\n~{tokens} prompt tokens, {runs} runs (median, min-max):")
    for name, values in ttft.items():
        med = statistics.median(values)
        print(f"  {name:26s} TTFT {med:7.1f} ms ({min(values):.1f}-{max(values):.1f}), {tokens / med * 1e3:6.0f} tok/s, "
              f"{base / med:.2f}x the stateful prefill's speed")
