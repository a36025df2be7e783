import numpy as np, openvino as ov, os, time
from vinolm.engines.ovconfig import compile_properties
from vinolm.models import prepare
model = prepare("smollm2-135m", "int8", progress=lambda _: None)
props = compile_properties("CPU", {}, None, export=model.weights)
r = ov.Core().compile_model(model.path / "openvino_model.xml", "CPU", props).create_infer_request()
def run(toks, start, B):
    r.infer({"input_ids": np.array([toks] * B), "attention_mask": np.ones((B, start+len(toks)), dtype=np.int64),
             "position_ids": np.tile(np.arange(start, start+len(toks)), (B, 1)), "beam_idx": np.arange(B, dtype=np.int32)})
P = 700
prompt = [100 + (i * 37) % 5000 for i in range(P)]
for B in (1, 2):
    for k in (1, 6, 11):
        ts = []
        for rep in range(12):
            r.reset_state(); run(prompt, 0, B); run([5], P, B); run([6], P + 1, B)
            t0 = time.perf_counter(); run([7] * k, P + 2, B); ts.append(time.perf_counter() - t0)
        print(f"B={B} pass of {k}: {np.median(ts)*1e3:.2f} ms")
