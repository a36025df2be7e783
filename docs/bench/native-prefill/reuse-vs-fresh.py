"""Keeping a prefix of the state and feeding the rest after it, against feeding the whole prompt
afresh, through StatefulLM (the default model, vinolm's defaults, 2 cores; medians of 5). Throwaway
measurement behind native_model.REUSE_RATIO (docs/benchmarks.md section 22); run with
``ONEDNN_MAX_CPU_ISA=AVX2`` etc. for the other kinds' kernels. It ran before REUSE_RATIO existed:
``trim`` and ``prefill`` are called directly, so it measures both ways whatever the rule says."""
import sys, time, numpy as np, openvino as ov
from vinolm.engines.ovconfig import compile_properties
from vinolm.engines.native_model import StatefulLM
from vinolm.engines import native_model
from vinolm.models import prepare
model = prepare("smollm2-135m", "int8", progress=lambda _: None)
props = compile_properties("CPU", {}, None, export=model.weights)
lm = StatefulLM(ov.Core(), model.path / "openvino_model.xml", "CPU", props, 4096)
print("twin", lm.twin is not None)
def toks(n, seed): return [100 + (i * 37 + seed * 101) % 5000 for i in range(n)]
res = {}
for C, S in ((30, 300), (30, 900), (150, 300), (300, 300), (300, 100), (600, 100), (600, 300), (100, 600), (800, 50)):
    for rep in range(5):
        prefix = toks(C, 0)
        old = prefix + toks(S, rep + 50)
        new = prefix + toks(S, rep + 100)
        # reuse path: state holds old, trim to C, prefill suffix
        lm.reset(); lm.prefill(old)
        t0 = time.perf_counter(); lm.trim(C); lm.prefill(new[C:]); t1 = time.perf_counter()
        lm.reset(); t2 = time.perf_counter(); lm.prefill(new); t3 = time.perf_counter()
        res.setdefault((C, S), []).append((t1 - t0, t3 - t2))
    a = np.median([x for x, _ in res[(C, S)]]) * 1e3; b = np.median([y for _, y in res[(C, S)]]) * 1e3
    print(f"kept {C:4d}, new {S:4d}: trim+suffix {a:7.1f} ms, fresh {b:7.1f} ms -> {'reuse' if a < b else 'fresh'} wins ({b/a:.2f}x)", flush=True)
