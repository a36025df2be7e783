"""genai draft decoding: fixed proposals vs assistant_confidence_threshold, interleaved, one process."""

import os
import statistics
import sys
import time

import openvino_genai as g

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "src"))
from vinolm.bench.tasks import task_prompts  # the repository's vinolm

W = os.path.expanduser("~/.cache/vinolm/bench/shapes/smollm2-135m-wide/int8")
D = os.path.expanduser(sys.argv[1])
props = {"KV_CACHE_PRECISION": "f16", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "64"}
plain = g.LLMPipeline(W, "CPU", **props)
spec = g.LLMPipeline(W, "CPU", draft_model=g.draft_model(D, "CPU", **props), **props)
story = task_prompts("story", 0)
rows = {"plain": None, "n2": {"num_assistant_tokens": 2}, "n3": {"num_assistant_tokens": 3},
        "c0.3": {"assistant_confidence_threshold": 0.3}, "c0.5": {"assistant_confidence_threshold": 0.5},
        "c0.7": {"assistant_confidence_threshold": 0.7}}
tok = plain.get_tokenizer()
def run(name, i):
    cfg = g.GenerationConfig(max_new_tokens=128, do_sample=False)
    for k, v in (rows[name] or {}).items():
        setattr(cfg, k, v)
    pipe = plain if rows[name] is None else spec
    prompt = tok.apply_chat_template([{"role": "user", "content": story(i)}], add_generation_prompt=True)
    stamps = []
    def streamer(sub):
        stamps.append(time.perf_counter())
        return g.StreamingStatus.RUNNING
    out = pipe.generate([prompt], cfg, streamer)
    return stamps, out.texts[0], out.perf_metrics.get_num_generated_tokens()
res = {k: [] for k in rows}; texts = {k: [] for k in rows}
for i in range(6):
    for name in rows:
        stamps, text, n = run(name, 100 + i)
        if i == 0:
            continue  # warm-up
        res[name].append((stamps[-1] - stamps[0]) / max(1, n - 1))
        texts[name].append(text)
base = statistics.median(res["plain"])
for name in rows:
    same = all(a == b for a, b in zip(texts[name], texts["plain"]))
    ratios = [p / t for p, t in zip(res["plain"], res[name])]
    print(f"{name:6s} TPOT {statistics.median(res[name])*1000:6.2f} ms  speed-up per run median {statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})  same answers {same}")
