"""Interleaved timing of builds of vinolm's q4_1 kernel library (docs/benchmarks.md section 32).

A chain of 120 Q4MatMul nodes at the default model's MLP shapes (576<->1536, 66 MB of blocks) and the
49152x576 Q8MatMul output layer, at M = 1 (a token step) and M = 64 (a prompt), each library in its own
Core, round-robin, 9 rounds; medians. Usage: python kernel_probe.py LABEL=path/to/lib.so ... (NT=1 for
one thread; CHAIN_ROWS=1,8,256 for other chain row counts, section 34, and the chain's multiply-adds a second). Libraries are built from a version of src/vinolm/kernels/q4_1.cpp with the flags in
vinolm/kernels/__init__.py (the blobs are packed by the current export/blocks.py: for timing only).
"""
import os, sys, time, tempfile, statistics
from pathlib import Path
import numpy as np, openvino as ov, openvino.opset13 as ops
from vinolm.export.blocks import OPS, _op_class, quantize, quantize_q8_0
libs = dict(a.split("=", 1) for a in sys.argv[1:])
THREADS = {"INFERENCE_NUM_THREADS": int(os.environ["NT"])} if os.environ.get("NT") else {}
rng = np.random.default_rng(0)
tmp = Path(tempfile.mkdtemp())
x = ops.parameter([1, -1, 576], np.float32, name="x")
h = x.output(0)
Q4 = _op_class(OPS["q4_1 g32"]); Q8 = _op_class(OPS["q8_0 g32"])
for i in range(60):
    a = Q4([h, ops.constant(quantize(rng.standard_normal((1536, 576)).astype(np.float32) * 0.05)).output(0)])
    h = Q4([a.output(0), ops.constant(quantize(rng.standard_normal((576, 1536)).astype(np.float32) * 0.05)).output(0)]).output(0)
ov.save_model(ov.Model([h], [x]), tmp / "chain.xml", compress_to_fp16=False)
y = ops.parameter([1, -1, 576], np.float32, name="x")
o = Q8([y.output(0), ops.constant(quantize_q8_0(rng.standard_normal((49152, 576)).astype(np.float32))).output(0)])
ov.save_model(ov.Model([o.output(0)], [y]), tmp / "head.xml", compress_to_fp16=False)
reqs = {}
for label, path in libs.items():
    core = ov.Core(); core.add_extension(path)
    for name in ("chain", "head"):
        cm = core.compile_model(core.read_model(tmp / f"{name}.xml"), "CPU", {"NUM_STREAMS": "1", **THREADS})
        reqs[(label, name)] = cm.create_infer_request()
CHAIN_ROWS = [int(m) for m in os.environ.get("CHAIN_ROWS", "").split(",") if m]
cases = ([("chain", m, max(1, 256 // m // 8)) for m in CHAIN_ROWS] if CHAIN_ROWS else
         [("chain", 1, 20), ("chain", 64, 2), ("head", 1, 20), ("head", 64, 1)])
times = {(l, c, m): [] for l in libs for c, m, _ in cases}
data = {m: rng.standard_normal((1, m, 576)).astype(np.float32) for _, m, _ in cases}
for l in libs:
    for c, m, reps in cases: reqs[(l, c)].infer([data[m]])
for rnd in range(9):
    for l in libs:
        for c, m, reps in cases:
            r = reqs[(l, c)]
            t = time.perf_counter()
            for _ in range(reps): r.infer([data[m]])
            times[(l, c, m)].append((time.perf_counter() - t) / reps * 1e3)
base = list(libs)[0]
for c, m, _ in cases:
    row = [f"{c} M={m}:"]
    for l in libs:
        med = statistics.median(times[(l, c, m)])
        row.append(f"{l} {med:.3f} ms ({statistics.median(times[(base, c, m)]) / med:.2f}x)")
    print("  ".join(row), flush=True)
if CHAIN_ROWS:
    for l in libs:  # 120 matmuls of 1536x576
        print(l, "  ".join(f"M={m}: {120 * 1536 * 576 * m / statistics.median(times[(l, 'chain', m)]) / 1e6:.1f} G multiply-adds/s"
                           for m in CHAIN_ROWS))
