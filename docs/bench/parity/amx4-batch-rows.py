import numpy as np, openvino as ov, sys, os, time
from vinolm.engines.ovconfig import compile_properties, parse_ov_config
from vinolm.models import prepare
model = prepare(os.environ.get("M", "smollm2-135m"), "int8", progress=lambda _: None)
core = ov.Core()
def make(cfg):
    props = compile_properties("CPU", parse_ov_config(cfg), None, export=model.weights)
    return core.compile_model(model.path / "openvino_model.xml", "CPU", props).create_infer_request()
def run(req, toks, start, B):
    req.infer({"input_ids": np.array([toks] * B), "attention_mask": np.ones((B, start+len(toks)), dtype=np.int64),
               "position_ids": np.tile(np.arange(start, start+len(toks)), (B, 1)), "beam_idx": np.arange(B, dtype=np.int32)})
    return req.get_tensor("logits").data[0].copy()
tokens = [200 + i for i in range(11)]
for B in (1, 2):
    r = make([])
    worst = 0; bad = 0; n = 0; tsteps = []
    for P in range(100, 1000, 50):
        prompt = [100 + (i * 37) % 5000 for i in range(P)]
        r.reset_state(); run(r, prompt, 0, B)
        singles = []
        for i, t in enumerate(tokens):
            t0 = time.perf_counter(); singles.append(run(r, [t], P + i, B)[-1]); tsteps.append(time.perf_counter() - t0)
        singles = np.stack(singles)
        r.reset_state(); run(r, prompt, 0, B)
        p = run(r, tokens, P, B)[-11:]
        d = np.abs(p - singles).max(); worst = max(worst, d); bad += d > 0; n += 1
    print(f"B={B}: {bad} of {n} lengths differ (worst {worst:.3g}); step median {np.median(tsteps)*1e3:.2f} ms")
