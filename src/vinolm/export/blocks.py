"""The ``q4_1`` weight format: llama.cpp's Q4_1 blocks, multiplied by vinolm's own kernel.

An FP16 export's weight matmuls become ``Q4MatMul`` operations (``vinolm/kernels/q4_1.cpp``)
over 4-bit weights in blocks of 32, each with an f16 scale and minimum, quantized as
llama.cpp's ``quantize_row_q4_1`` does, so a GGUF in Q4_1 (the default model ships as one)
comes back as the weights it held. The kernel multiplies them by int8 activations with AVX2
integer instructions, which OpenVINO's CPU plugin uses only with VNNI (docs/benchmarks.md
section 31). The blocks are stored repacked by 8 output rows (the kernel's layout, described
in the C++ source). A matmul whose shape does not fit the blocks (inputs not a multiple of
32, outputs not a multiple of 8) keeps its FP16 weights, and ``vinolm.json`` says how many.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

#: Weights per block along the inputs, and output rows repacked together (the kernel's constants).
BLOCK = 32
ROWS = 8
LAYOUT = "q4_1 g32"


def quantize(weights: np.ndarray) -> np.ndarray:
    """[N, K] float weights -> the kernel's u8 blob [N/8, K/32 * 160]."""
    n, k = weights.shape
    blocks = weights.astype(np.float32).reshape(n, k // BLOCK, BLOCK)
    low, high = blocks.min(axis=-1), blocks.max(axis=-1)
    scale = (high - low) / 15
    inverse = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale != 0)
    q = np.minimum(15, ((blocks - low[..., None]) * inverse[..., None] + 0.5).astype(np.int32)).astype(np.uint8)
    return pack(q, scale.astype(np.float16), low.astype(np.float16))


def pack(q: np.ndarray, scale: np.ndarray, minimum: np.ndarray) -> np.ndarray:
    """Values 0..15 [N, K/32, 32] with f16 scales and minimums [N, K/32] -> the repacked blob."""
    n, nb, _ = q.shape
    nibbles = (q[..., :16] | (q[..., 16:] << 4)).astype(np.uint8)
    by_group = nibbles.reshape(n // ROWS, ROWS, nb, 16).transpose(0, 2, 1, 3).reshape(n // ROWS, nb, ROWS * 16)
    heads = [h.view(np.uint8).reshape(n // ROWS, ROWS, nb, 2).transpose(0, 2, 1, 3).reshape(n // ROWS, nb, ROWS * 2)
             for h in (scale, minimum)]
    return np.ascontiguousarray(np.concatenate([*heads, by_group], axis=-1).reshape(n // ROWS, -1))


def dequantize(blob: np.ndarray) -> np.ndarray:
    """The blob's weights [N, K] as float32: what the kernel multiplies."""
    groups = blob.shape[0]
    nb = blob.shape[1] // (ROWS * 20)
    parts = blob.reshape(groups, nb, ROWS * 20)
    scale, minimum = (parts[..., i * 16:(i + 1) * 16].copy().view(np.float16).astype(np.float32) for i in (0, 1))
    nibbles = parts[..., 32:].reshape(groups, nb, ROWS, 16)
    q = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=-1).astype(np.float32)  # [g, nb, 8, 32]
    w = q * scale[..., None] + minimum[..., None]
    return w.transpose(0, 2, 1, 3).reshape(groups * ROWS, nb * BLOCK)


def to_q4_1(xml: Path) -> dict[str, int]:
    """Rewrite the FP16 IR at ``xml`` in place (written beside it, then renamed); returns its
    weight layouts for ``vinolm.json``: matmuls in blocks, and those left in FP16."""
    import openvino as ov
    from openvino import opset13 as ops

    model = ov.Core().read_model(xml)
    keep: list[np.ndarray] = []  # the new constants' buffers, alive until the model is saved
    layouts = {LAYOUT: 0, "fp16": 0}
    op_class = _op_class()
    for op in model.get_ordered_ops():
        if op.get_type_name() != "MatMul" or (weights := _weights(op)) is None:
            continue
        n, k = weights.shape
        if n % ROWS or k % BLOCK:
            layouts["fp16"] += 1
            continue
        keep.append(quantize(weights))
        node = op_class([op.input_value(0), ops.constant(keep[-1], shared_memory=True).output(0)])
        node.set_friendly_name(op.get_friendly_name())
        op.output(0).replace(node.output(0))
        layouts[LAYOUT] += 1
    tmp = xml.with_name(f".q4_1-{os.getpid()}.xml")
    ov.save_model(model, tmp, compress_to_fp16=False)
    del model, keep
    os.replace(tmp.with_suffix(".bin"), xml.with_suffix(".bin"))
    os.replace(tmp, xml)
    return {name: count for name, count in layouts.items() if count}


def _weights(op: Any) -> np.ndarray | None:
    """A weight matmul's [N, K] weights (x @ W.T with W a constant, possibly converted), else None."""
    attrs = op.get_attributes()
    if attrs["transpose_a"] or not attrs["transpose_b"] or op.get_output_element_type(0).get_type_name() != "f32":
        return None
    node = op.input_value(1).get_node()
    while node.get_type_name() == "Convert":
        node = node.input_value(0).get_node()
    if node.get_type_name() != "Constant" or len(node.get_output_shape(0)) != 2:
        return None
    return np.asarray(node.data, dtype=np.float32)


@cache
def _op_class() -> type:
    """The operation as the IR names it (``Q4MatMul``, opset ``extension``): a Python stand-in
    with the kernel's shapes, enough to write the IR; the kernel's library reads it back."""
    import openvino as ov

    class Q4MatMul(ov.Op):
        def __init__(self, inputs: list[Any] | None = None) -> None:
            super().__init__(self, inputs)
            if inputs:
                self.constructor_validate_and_infer_types()

        def validate_and_infer_types(self) -> None:
            shape = self.get_input_partial_shape(0)
            shape[shape.rank.get_length() - 1] = ov.Dimension(self.get_input_partial_shape(1)[0].get_length() * ROWS)
            self.set_output_type(0, ov.Type.f32, shape)

        def clone_with_new_inputs(self, new_inputs: list[Any]) -> Q4MatMul:
            return Q4MatMul(new_inputs)

        def visit_attributes(self, visitor: Any) -> bool:
            return True

    return Q4MatMul
