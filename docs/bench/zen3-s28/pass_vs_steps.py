"""Is the q4_1 stateful model's per-token work M-invariant in the graph? Compare a 4-token pass with 4 steps, node by node."""
import numpy as np, openvino as ov, sys
from vinolm.models import prepare
from vinolm.kernels import extensions_for
folder = prepare("smollm2-135m", "q4_1", progress=lambda _: None)
core = ov.Core()
for p in extensions_for(folder.info): core.add_extension(p)
model = core.read_model(folder.path / "openvino_model.xml")
# expose outputs of every Q4/Q8 op and the first few other ops
targets = [op for op in model.get_ordered_ops() if op.get_type_name() in ("Q4MatMul", "Q4MLP")]
names = [t.get_friendly_name() for t in targets]
for t in targets: model.add_outputs(t.output(0))
cm = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0})
ins = {i.get_any_name(): i for i in cm.inputs}
print(len(cm.outputs), len(targets))
rng = np.random.default_rng(0)
ids = rng.integers(100, 20000, size=20)
def feed(req, toks, start):
    n = len(toks)
    d = {"input_ids": np.array([toks], dtype=np.int64), "attention_mask": np.ones((1, start + n), dtype=np.int64),
         "position_ids": np.arange(start, start + n, dtype=np.int64)[None], "beam_idx": np.zeros(1, dtype=np.int32)}
    req.infer({k: v for k, v in d.items() if k in ins})
    return [req.get_tensor(cm.outputs[i + 1]).data.copy() for i in range(len(targets))]
r1 = cm.create_infer_request(); r1.reset_state(); feed(r1, list(ids[:16]), 0); passed = feed(r1, list(ids[16:20]), 16)
r2 = cm.create_infer_request(); r2.reset_state(); feed(r2, list(ids[:16]), 0)
steps = [feed(r2, [int(t)], 16 + j) for j, t in enumerate(ids[16:20])]
for k, name in enumerate(names[:12]):
    diffs = [float(np.abs(passed[k][0, j] - steps[j][k][0, 0]).max()) for j in range(4)]
    print(name, ["%.2g" % d for d in diffs])
