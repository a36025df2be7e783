"""Attention alone in bf16 inside an f32 model (sixteenth session, Intel Xeon with AMX).

OpenVINO's CPU plugin runs a fused attention node in the precision of its query input, and
keeps the KV state in the type of its variables. Converting every KV variable to bf16 and
feeding each ScaledDotProductAttention bf16 (its output converted back) leaves the weight
matmuls in the compile's f32 with int8 activations while attention takes AMX's bf16 path. (The
plugin's own per-node marks do not reach fused nodes: compiled in bf16 with every other node
marked "keep f32", the FullyConnected, RMS and RoPE nodes still ran in bf16.)

    python attention-bf16.py probe FOLDER f32,state,bf16 ROUNDS   # prefill and step times, in-process
    python attention-bf16.py save FOLDER OUT                     # OUT: FOLDER with the edited IR

``bench.interleave --row native:FOLDER --row native:OUT`` then compares the engines on it.
"""

import shutil
import sys
import time
from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops
from openvino import Type
from openvino.op.util import Variable, VariableInfo

core = ov.Core()
PROPS = {"KV_CACHE_PRECISION": "f16", "DYNAMIC_QUANTIZATION_GROUP_SIZE": 64, "INFERENCE_NUM_THREADS": 2}


def consumer(node: ov.Node, kind: str) -> ov.Node:
    """The one node of type ``kind`` fed by ``node`` (some layers also feed a ShapeOf)."""
    return next(t.get_node() for t in node.output(0).get_target_inputs() if t.get_node().get_type_name() == kind)


def bf16_attention(model: ov.Model) -> ov.Model:
    for read in [op for op in model.get_ordered_ops() if op.get_type_name() == "ReadValue"]:
        old = model.get_variable_by_id(read.get_variable_id())
        info = VariableInfo()
        info.data_shape, info.data_type, info.variable_id = old.get_info().data_shape, Type.bf16, old.get_info().variable_id
        variable = Variable(info)
        new_read = ops.read_value(ops.convert(read.input(0).get_source_output(), "bf16"), variable)
        gather = consumer(read, "Gather")  # beam_idx reorder
        gather.input(0).replace_source_output(new_read.output(0))
        concat = consumer(gather, "Concat")  # past + this step's keys/values
        step = ops.convert(concat.input(1).get_source_output(), "bf16")
        concat.input(1).replace_source_output(step.output(0))
        assign = consumer(concat, "Assign")
        gather.validate_and_infer_types()
        concat.validate_and_infer_types()
        model.remove_sink(assign)
        model.add_sinks([ops.assign(concat, variable)])
        model.remove_variable(old)
        model.add_variables([variable])
    for op in [op for op in model.get_ordered_ops() if op.get_type_name() == "ScaledDotProductAttention"]:
        for port in range(op.get_input_size()):
            if op.input(port).get_element_type() == Type.f32:
                op.input(port).replace_source_output(ops.convert(op.input(port).get_source_output(), "bf16").output(0))
        consumers = list(op.output(0).get_target_inputs())
        back = ops.convert(op.output(0), "f32")
        for target in consumers:
            target.replace_source_output(back.output(0))
    model.validate_nodes_and_infer_types()
    return model


def compiled(folder: str, mode: str) -> ov.CompiledModel:
    model = core.read_model(f"{folder}/openvino_model.xml")
    if mode == "state":
        model = bf16_attention(model)
    return core.compile_model(model, "CPU", {**PROPS, "INFERENCE_PRECISION_HINT": "bf16" if mode == "bf16" else "f32"})


def attention_precision(cm: ov.CompiledModel) -> dict[str, int]:
    seen: dict[str, int] = {}
    for op in cm.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if info["layerType"].astype(str).startswith("ScaledDot"):
            key = info["runtimePrecision"].astype(str)
            seen[key] = seen.get(key, 0) + 1
    return seen


def run(cm: ov.CompiledModel, n: int, seed: int, steps: int = 16) -> tuple[float, float, list[int]]:
    req = cm.create_infer_request()
    ids = np.random.default_rng(seed).integers(100, 40000, size=(1, n))
    t = time.perf_counter()
    req.infer({"input_ids": ids, "attention_mask": np.ones((1, n), np.int64), "position_ids": np.arange(n)[None],
               "beam_idx": np.zeros(1, np.int32)})
    prefill = time.perf_counter() - t
    tokens, times = [int(req.get_tensor("logits").data[0, -1].argmax())], []
    for i in range(steps):
        length = n + i + 1
        t = time.perf_counter()
        req.infer({"input_ids": np.array([[tokens[-1]]]), "attention_mask": np.ones((1, length), np.int64),
                   "position_ids": np.array([[length - 1]]), "beam_idx": np.zeros(1, np.int32)})
        times.append(time.perf_counter() - t)
        tokens.append(int(req.get_tensor("logits").data[0, -1].argmax()))
    return prefill * 1e3, float(np.median(times)) * 1e3, tokens


def probe(folder: str, modes: list[str], rounds: int) -> None:
    models = {mode: compiled(folder, mode) for mode in modes}
    for mode, cm in models.items():
        print(f"{mode}: attention nodes by runtime precision {attention_precision(cm)}")
    results: dict[tuple[str, int], list[tuple[float, float, list[int]]]] = {}
    for r in range(rounds):
        for mode, cm in models.items():
            for n in (192, 990):
                results.setdefault((mode, n), []).append(run(cm, n, seed=r))
    for (mode, n), rows in results.items():
        print(f"{mode:5s} {n} tokens: prefill {np.median([x[0] for x in rows]):7.1f} ms, "
              f"step {np.median([x[1] for x in rows]):5.2f} ms, first greedy tokens {rows[0][2][:8]}")


def save(folder: str, out: str) -> None:
    target = Path(out)
    shutil.copytree(folder, target, ignore=shutil.ignore_patterns("openvino_model.*"))
    ov.save_model(bf16_attention(core.read_model(f"{folder}/openvino_model.xml")), target / "openvino_model.xml",
                  compress_to_fp16=False)


if __name__ == "__main__":
    if sys.argv[1] == "probe":
        probe(sys.argv[2], sys.argv[3].split(","), int(sys.argv[4]))
    else:
        save(sys.argv[2], sys.argv[3])
