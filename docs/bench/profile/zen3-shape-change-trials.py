"""Does a bounded input shape remove the cost of going from a 4-token pass back to one token?"""
import sys, time, statistics
import numpy as np, openvino as ov
XML = sys.argv[1]
mode = sys.argv[2]   # "dyn" or "bounded"
core = ov.Core()
m = core.read_model(XML)
if mode == "bounded":
    m.reshape({"input_ids": ov.PartialShape([1, ov.Dimension(1, 1024)]),
               "attention_mask": ov.PartialShape([1, ov.Dimension(1, 2048)]),
               "position_ids": ov.PartialShape([1, ov.Dimension(1, 1024)]),
               "beam_idx": ov.PartialShape([1])})
props = {"KV_CACHE_PRECISION": "f16", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "64", "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
cm = core.compile_model(m, "CPU", props)
rq = cm.create_infer_request()
rng = np.random.default_rng(0)
pos = 0
def feed(n):
    global pos
    ids = rng.integers(100, 40000, size=(1, n), dtype=np.int64)
    rq.infer({"input_ids": ids, "attention_mask": np.ones((1, pos + n), np.int64),
              "position_ids": np.arange(pos, pos + n, dtype=np.int64)[None],
              "beam_idx": np.zeros(1, np.int32)})
    pos += n
def timed(n):
    t = time.perf_counter(); feed(n); return (time.perf_counter() - t) * 1e3
feed(650)
step, pass_after_step, step_after_pass, pass_after_pass = [], [], [], []
for _ in range(3):
    timed(1); timed(4); timed(1)
for r in range(20):
    for _ in range(3): step.append(timed(1))
    pass_after_step.append(timed(4))
    pass_after_pass.append(timed(4))
    step_after_pass.append(timed(1))
    if pos > 1000:
        rq.reset_state(); pos = 0; feed(650)
med = statistics.median
print(f"{mode}: step {med(step):.1f}  pass after step {med(pass_after_step):.1f}  pass after pass {med(pass_after_pass):.1f}  step after pass {med(step_after_pass):.1f} ms")
