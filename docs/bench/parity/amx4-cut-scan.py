import numpy as np, openvino as ov, sys, os, time
from vinolm.engines.ovconfig import compile_properties, parse_ov_config
from vinolm.engines.native_model import StatefulLM
from vinolm.models import prepare
model = prepare(os.environ.get("M", "smollm2-135m"), sys.argv[1], progress=lambda _: None)
props = compile_properties("CPU", parse_ov_config(sys.argv[4:]), None, export=model.weights)
lm = StatefulLM(ov.Core(), model.path / "openvino_model.xml", "CPU", props, 4096, mirror=True)
t0 = time.perf_counter(); why = lm.inexact_checks(); print("inexact:", why, "cut:", lm.cut_rejections, "mirror", lm._mirror._dtype, f"probe {time.perf_counter()-t0:.2f}s")
steps = StatefulLM(ov.Core(), model.path / "openvino_model.xml", "CPU", props, 4096)
rng = np.random.default_rng(1)
bad = n = 0; cuts = []
for P in range(int(sys.argv[2]), int(sys.argv[3]), int(os.environ.get("STEP", "97"))):
    prompt = [100 + (i * 37) % 5000 for i in range(P)]
    expected = [steps.prefill(prompt).copy()]; steps_tokens = []
    steps.reset(); expected = [steps.prefill(prompt).copy()]
    for _ in range(60):
        steps_tokens.append(int(np.argmax(expected[-1]))); expected.append(steps.decode_step(np.array(steps_tokens[-1:]))[0].copy())
    lm.reset(); lm.prefill(prompt); done = 0
    while done + 12 < len(steps_tokens):
        kept = int(rng.integers(1, 12))
        rows = lm.check(steps_tokens[done:done + kept] + [7] * (11 - kept))
        for i in range(kept):
            n += 1; d = np.abs(rows[i] - expected[done + 1 + i]).max(); bad += d > 0
            if d > 0 and bad < 5: print(f"P={P} row {i} at {P+done}: {d:.3g}")
        t0 = time.perf_counter(); lm.reject(11 - kept); cuts.append(time.perf_counter() - t0)
        done += kept
    steps.reset()
print(f"{n} rows, {bad} differ; reject median {np.median(cuts)*1e3:.1f} ms")
