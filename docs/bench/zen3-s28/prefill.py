"""Repeated 990-token prefills through vinolm's genai engine (paged), for perf."""
import os, sys, time
from vinolm.engines import load_engine
from vinolm.engines.base import EngineOptions
from vinolm.models import prepare
from vinolm.bench.schema import prompt_text
from vinolm.bench.worker import request

n = int(sys.argv[1]) if len(sys.argv) > 1 else 6
folder = prepare(os.environ.get("M", "smollm2-135m"), progress=lambda _: None)
eng = load_engine("genai", folder, EngineOptions())
texts = [prompt_text(eng.tokenize, eng.detokenize, 990, v) for v in range(n + 1)]
def once(t):
    s = time.perf_counter()
    for chunk in eng.generate(request(t, 1)):
        pass
    return time.perf_counter() - s
once(texts[-1])
print("ready", flush=True)
ts = [once(t) for t in texts[:n]]
print("prefill s:", " ".join(f"{t:.3f}" for t in ts), "median", sorted(ts)[len(ts)//2])
