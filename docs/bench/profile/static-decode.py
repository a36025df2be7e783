"""A token step on a model compiled for exactly one token (seventeenth session, Intel Xeon with AMX).

The stateful IR has dynamic input shapes, so before every inference OpenVINO's CPU plugin
infers each node's shapes again and readies its primitives: time outside the node counters
(`bench.profile`: a 6.1 ms step with 4.4 ms in nodes). Reshaping the inputs to one token of
one row ([1, 1]; only the attention mask and the KV state stay dynamic) makes most nodes
static. Both models fill their state by single steps over the same tokens, then time
``STEPS`` steps, alternating ``ROUNDS`` times; the logits of every step are compared.

    python static-decode.py CONTEXT STEPS ROUNDS
"""

import statistics
import sys
import time
from pathlib import Path

import numpy as np
import openvino as ov

from vinolm.engines.ovconfig import compile_properties

XML = "~/.cache/vinolm/models/smollm2-135m/int8/openvino_model.xml"


def compiled(core: ov.Core, static: bool) -> ov.CompiledModel:
    model = core.read_model(str(Path(XML).expanduser()))
    if static:
        model.reshape({"input_ids": [1, 1], "position_ids": [1, 1], "attention_mask": [1, -1], "beam_idx": [1]})
    return core.compile_model(model, "CPU", compile_properties("CPU", {}, None))


def decode(model: ov.CompiledModel, context: int, steps: int) -> tuple[float, np.ndarray]:
    request = model.create_infer_request()
    token, position = np.zeros((1, 1), np.int64), np.zeros((1, 1), np.int64)
    mask = np.ones((1, context + steps), np.int64)
    request.set_tensor("input_ids", ov.Tensor(token, shared_memory=True))
    request.set_tensor("position_ids", ov.Tensor(position, shared_memory=True))
    request.set_tensor("beam_idx", ov.Tensor(np.zeros(1, np.int32)))
    times, logits = [], []
    for i in range(context + steps):
        token[0, 0], position[0, 0] = 300 + i % 1000, i
        request.set_tensor("attention_mask", ov.Tensor(mask[:, : i + 1]))
        started = time.perf_counter()
        request.infer()
        if i >= context:
            times.append(time.perf_counter() - started)
            logits.append(request.get_output_tensor(0).data[0, -1].copy())
    return statistics.median(times), np.stack(logits)


def main(context: int, steps: int, rounds: int) -> None:
    core = ov.Core()
    models = {"dynamic": compiled(core, False), "static": compiled(core, True)}
    runs: dict[str, list[tuple[float, np.ndarray]]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            runs[name].append(decode(model, context, steps))
    for name, results in runs.items():
        print(name, " ".join(f"{t * 1e3:.3f}" for t, _ in results),
              f"ms; median {statistics.median(t for t, _ in results) * 1e3:.3f}")
    same = all(np.array_equal(a, b) for (_, a), (_, b) in zip(runs["dynamic"], runs["static"]))
    print("same logits at every step:", same)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
