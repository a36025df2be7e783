"""Decode-heavy loop (32-token prompts, N new tokens) through vinolm's genai engine, for perf."""
import os, sys, time
from vinolm.engines import load_engine
from vinolm.engines.base import EngineOptions
from vinolm.models import prepare
from vinolm.bench.schema import prompt_text
from vinolm.bench.worker import request

runs, new = int(sys.argv[1]), int(sys.argv[2])
import dataclasses, json; from pathlib import Path; pm = prepare("smollm2-135m", progress=lambda _: None); fp = Path(os.environ["F"]); folder = dataclasses.replace(pm, path=fp, info=json.loads((fp / "vinolm.json").read_text()))
eng = load_engine("genai", folder, EngineOptions())
texts = [prompt_text(eng.tokenize, eng.detokenize, 32, v) for v in range(runs + 1)]
def once(t):
    s = time.perf_counter(); n = 0
    for chunk in eng.generate(request(t, new)):
        n += len(chunk.token_ids)
    return (time.perf_counter() - s) / n
once(texts[-1])
print("ready", flush=True)
ts = [once(t) for t in texts[:runs]]
print("s/token:", " ".join(f"{t*1e3:.2f}ms" for t in ts))
