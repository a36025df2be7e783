"""The ``q4_1`` weight format: llama.cpp's Q4_1 blocks, multiplied by vinolm's own kernel.

An FP16 export's weight matmuls become ``Q4MatMul`` operations (``vinolm/kernels/q4_1.cpp``)
over 4-bit weights in blocks of 32, each with an f16 scale and minimum, quantized as
llama.cpp's ``quantize_row_q4_1`` does, so a GGUF in Q4_1 (the default model ships as one)
comes back as the weights it held. The output layer (the matmul that makes the logits)
becomes a ``Q8MatMul`` over llama.cpp's 8-bit Q8_0 blocks instead: llama.cpp's 4-bit files
keep that layer at 8 bits or more, and in 4 bits it moved the default model's next-token
distribution 15 times further from FP16's (docs/benchmarks.md section 32); the embedding
table becomes int8 rows, as in OpenVINO's INT8 exports. Where the export fuses (``--fuse``,
the default) a gated MLP (down(silu(gate(x)) * up(x)), as Llama-style models have) becomes one
``Q4MLP`` operation over its three blocks, and a square matmul with the residual added to it
(o_proj) one ``Q4MatMulAdd``: the kernel's operations run as nodes with a fixed cost each, and
that makes five nodes one and two one. Those two hold their blocks in a body, a model of their
own, and take only activations, so that OpenVINO infers their shapes as it does an elementwise
operation's instead of on every call (the kernel's source says why). The kernels
multiply by int8 activations with AVX2 integer instructions, which OpenVINO's CPU plugin
uses only with VNNI (section 31). The blocks are stored repacked by 8 output rows (the
kernel's layout, described in the C++ source). A matmul whose shape does not fit the blocks
(inputs not a multiple of 32, outputs not a multiple of 8) keeps its FP16 weights, and
``vinolm.json`` says how many.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from vinolm.export.ir import save_in_place

#: Weights per block along the inputs, and output rows repacked together (the kernel's constants).
BLOCK = 32
ROWS = 8
#: The record's names for the layouts, and the kernels' operations for the two block layouts.
LAYOUT = "q4_1 g32"
OUTPUT_LAYOUT = "q8_0 g32"
TABLE_LAYOUT = "int8 channel-wise"
OPS = {LAYOUT: "Q4MatMul", OUTPUT_LAYOUT: "Q8MatMul"}
MLP = "Q4MLP"
MATMUL_ADD = "Q4MatMulAdd"
#: The operations that hold their blocks in a body (the kernel's source says why), and the names
#: of the body's results, in the order the kernel reads them.
BODY_BLOCKS = {MLP: ("gate", "up", "down"), MATMUL_ADD: ("weights",)}
#: Operations that only move data, which OpenVINO moves an elementwise operation above (a Q4MLP is one).
MOVES_DATA = frozenset({"Squeeze", "Unsqueeze", "Reshape", "Transpose", "ShuffleChannels", "Roll", "ReverseSequence",
                        "DepthToSpace", "BatchToSpace", "Broadcast", "Gather"})
#: Bytes of one block of a row group per operation (the kernel's ``kGroupBytes``).
GROUP_BYTES = {"Q4MatMul": 160, "Q8MatMul": 272, MLP: 160, MATMUL_ADD: 160}
#: The order of a row group's scales in a Q8_0 block: the kernel's lanes (Q4_1's are in row order).
Q8_LANES = np.array([0, 2, 4, 6, 1, 3, 5, 7])
ROW_ORDER = np.arange(ROWS)


def blob_matrix(op_type: str, shape: tuple[int, ...]) -> tuple[int, int]:
    """The [N, K] weight matrix held by a kernel operation's u8 blob of ``shape``."""
    return shape[0] * ROWS, shape[1] // GROUP_BYTES[op_type] * BLOCK


def quantize(weights: np.ndarray) -> np.ndarray:
    """[N, K] float weights -> the Q4_1 kernel's u8 blob [N/8, K/32 * 160]."""
    n, k = weights.shape
    blocks = weights.astype(np.float32).reshape(n, k // BLOCK, BLOCK)
    low, high = blocks.min(axis=-1), blocks.max(axis=-1)
    scale = (high - low) / 15
    inverse = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale != 0)
    q = np.minimum(15, ((blocks - low[..., None]) * inverse[..., None] + 0.5).astype(np.int32)).astype(np.uint8)
    return pack(q, scale.astype(np.float16), low.astype(np.float16))


def pack(q: np.ndarray, scale: np.ndarray, minimum: np.ndarray) -> np.ndarray:
    """Values 0..15 [N, K/32, 32] with f16 scales and minimums [N, K/32] -> the repacked blob: per
    block of a row group, four vectors whose byte 4r+j holds row r's elements 4v+j and 16+4v+j."""
    n, nb, _ = q.shape
    nibbles = (q[..., :16] | (q[..., 16:] << 4)).astype(np.uint8).reshape(n // ROWS, ROWS, nb, 4, 4)
    by_group = nibbles.transpose(0, 2, 3, 1, 4).reshape(n // ROWS, nb, ROWS * 16)
    heads = [_head(h, ROW_ORDER) for h in (scale, minimum)]
    return np.ascontiguousarray(np.concatenate([*heads, by_group], axis=-1).reshape(n // ROWS, -1))


def quantize_q8_0(weights: np.ndarray) -> np.ndarray:
    """[N, K] float weights -> the Q8_0 kernel's u8 blob [N/8, K/32 * 272], quantized as llama.cpp's
    ``quantize_row_q8_0`` (scale max|w|/127, values rounded half away from zero), so a GGUF's
    Q8_0 weights come back exactly."""
    n, k = weights.shape
    blocks = weights.astype(np.float32).reshape(n, k // BLOCK, BLOCK)
    scale = np.abs(blocks).max(axis=-1) / np.float32(127)
    inverse = np.divide(np.float32(1), scale, out=np.zeros_like(scale), where=scale != 0)
    scaled = blocks * inverse[..., None]
    q = (np.sign(scaled) * np.floor(np.abs(scaled) + np.float32(0.5))).astype(np.int8)
    # per row pair: both rows' elements 0-15, then both rows' 16-31 (the kernel's 256-bit loads)
    pairs = q.reshape(n // ROWS, ROWS // 2, 2, k // BLOCK, 2, 16).transpose(0, 3, 1, 4, 2, 5)
    data = pairs.reshape(n // ROWS, k // BLOCK, ROWS * BLOCK).view(np.uint8)
    return np.ascontiguousarray(np.concatenate([_head(scale.astype(np.float16), Q8_LANES), data], axis=-1).reshape(n // ROWS, -1))


def _head(values: np.ndarray, lanes: np.ndarray) -> np.ndarray:
    """f16 [N, K/32] -> each row group's block heads as bytes [N/8, K/32, 16], in the kernel's lane order."""
    n, nb = values.shape
    grouped = values.view(np.uint8).reshape(n // ROWS, ROWS, nb, 2)[:, lanes]
    return grouped.transpose(0, 2, 1, 3).reshape(n // ROWS, nb, ROWS * 2)


def _unhead(data: np.ndarray, lanes: np.ndarray) -> np.ndarray:
    """Block heads [groups, K/32, 16 bytes] -> f32 [groups, K/32, 8] in row order."""
    values = data.copy().view(np.float16).astype(np.float32)
    return values[..., np.argsort(lanes)]


def dequantize_q8_0(blob: np.ndarray) -> np.ndarray:
    """The Q8_0 blob's weights [N, K] as float32."""
    groups = blob.shape[0]
    nb = blob.shape[1] // (ROWS * 34)
    parts = blob.reshape(groups, nb, ROWS * 34)
    scale = _unhead(parts[..., :16], Q8_LANES)  # [g, nb, 8]
    q = parts[..., 16:].copy().view(np.int8).reshape(groups, nb, ROWS // 2, 2, 2, 16)  # [g, nb, pair, half, row, 16]
    q = q.transpose(0, 1, 2, 4, 3, 5).reshape(groups, nb, ROWS, BLOCK).astype(np.float32)
    w = q * scale[..., None]
    return w.transpose(0, 2, 1, 3).reshape(groups * ROWS, nb * BLOCK)


def dequantize(blob: np.ndarray) -> np.ndarray:
    """The Q4_1 blob's weights [N, K] as float32: what the kernel multiplies."""
    groups = blob.shape[0]
    nb = blob.shape[1] // (ROWS * 20)
    parts = blob.reshape(groups, nb, ROWS * 20)
    scale, minimum = (_unhead(parts[..., i * 16:(i + 1) * 16], ROW_ORDER) for i in (0, 1))
    nibbles = parts[..., 32:].reshape(groups, nb, 4, ROWS, 4).transpose(0, 1, 3, 2, 4).reshape(groups, nb, ROWS, 16)
    q = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=-1).astype(np.float32)  # [g, nb, 8, 32]
    w = q * scale[..., None] + minimum[..., None]
    return w.transpose(0, 2, 1, 3).reshape(groups * ROWS, nb * BLOCK)


def to_q4_1(xml: Path, fuse: bool) -> tuple[dict[str, int], int, int]:
    """Rewrite the FP16 IR at ``xml`` in place (written beside it, then renamed); returns its
    weight layouts for ``vinolm.json`` (matmuls in blocks, the embedding in int8 rows, and
    matmuls left in FP16), how many MLPs became one operation and how many square matmuls one
    with the residual added to them (``fuse``: both kinds, else neither)."""
    import openvino as ov

    model = ov.Core().read_model(xml)
    keep: list[np.ndarray] = []  # the new constants' buffers, alive until the model is saved
    layouts = {LAYOUT: 0, OUTPUT_LAYOUT: 0, TABLE_LAYOUT: 0, "fp16": 0}
    output = logits_matmul(model)
    for op in model.get_ordered_ops():
        if _is_embedding(op) and (table := _constant(op.input_value(0))) is not None:
            op.input(0).replace_source_output(_int8_rows(table, keep))
            layouts[TABLE_LAYOUT] += 1
        if op.get_type_name() != "MatMul" or (weights := _weights(op)) is None:
            continue
        n, k = weights.shape
        if n % ROWS or k % BLOCK:
            layouts["fp16"] += 1
            continue
        layout = OUTPUT_LAYOUT if output is not None and op.get_name() == output.get_name() else LAYOUT
        keep.append(quantize_q8_0(weights) if layout == OUTPUT_LAYOUT else quantize(weights))
        node = _op_class(OPS[layout])([op.input_value(0), _shared(keep[-1])])
        node.set_friendly_name(op.get_friendly_name())
        op.output(0).replace(node.output(0))
        layouts[layout] += 1
    # the Python objects of the fused operations, alive until the model is saved: saving asks them for their bodies
    mlps = [node for op in model.get_ordered_ops() if fuse and op.get_type_name() == "Multiply"
            and (node := _fuse_mlp(op)) is not None]
    adds = [node for op in model.get_ordered_ops() if fuse and op.get_type_name() == "Add"
            and (node := _fuse_matmul_add(op)) is not None]
    save_in_place(model, xml, "q4_1")
    return {name: count for name, count in layouts.items() if count}, len(mlps), len(adds)


def _fuse_mlp(multiply: Any) -> Any:
    """Replace ``down(swish(gate(x)) * up(x))`` of Q4MatMuls, ending at ``multiply``, with one
    Q4MLP whose body holds the three blocks, and return it; None where the pattern or its single
    consumers are not there, or x comes from an operation that only moves data (the kernel's
    source says why)."""
    sides = [value.get_node() for value in multiply.input_values()]
    swish = next((n for n in sides if _is_silu(n)), None)
    up = next((n for n in sides if n is not swish and n.get_type_name() == OPS[LAYOUT]), None)
    consumers = list(multiply.output(0).get_target_inputs())
    if swish is None or up is None or len(consumers) != 1 or consumers[0].get_index() != 0:
        return None
    gate, down = swish.input_value(0).get_node(), consumers[0].get_node()
    x = gate.input_value(0) if gate.get_type_name() == OPS[LAYOUT] else None
    if (x is None or down.get_type_name() != OPS[LAYOUT] or up.input_value(0) != x
            or x.get_node().get_type_name() in MOVES_DATA
            or blob_matrix(MLP, tuple(down.get_input_shape(1)))[0] != blob_matrix(MLP, tuple(gate.get_input_shape(1)))[1]
            or any(len(n.output(0).get_target_inputs()) != 1 for n in (gate, swish, up))):
        return None
    node = _op_class(MLP)([x], _body(MLP, [n.input_value(1) for n in (gate, up, down)]))
    node.set_friendly_name(multiply.get_friendly_name().split("/")[0] + "/" + MLP)
    down.output(0).replace(node.output(0))
    return node


def _fuse_matmul_add(add: Any) -> Any:
    """Replace ``Add(x W^T, residual)`` of a square Q4MatMul whose one consumer is ``add`` (o_proj
    and the residual connection) with one Q4MatMulAdd, and return it; None where that is not the
    pattern or the residual's shape is not x's."""
    for side in (0, 1):
        matmul, residual = add.input_value(side).get_node(), add.input_value(1 - side)
        if matmul.get_type_name() != OPS[LAYOUT] or matmul.get_input_size() != 2:
            continue
        n, k = blob_matrix(MATMUL_ADD, tuple(matmul.get_input_shape(1)))
        x = matmul.input_value(0)
        if n != k or len(matmul.output(0).get_target_inputs()) != 1 or x.get_partial_shape() != residual.get_partial_shape():
            continue
        node = _op_class(MATMUL_ADD)([x, residual], _body(MATMUL_ADD, [matmul.input_value(1)]))
        node.set_friendly_name(matmul.get_friendly_name())
        add.output(0).replace(node.output(0))
        return node
    return None


def _body(op_type: str, blocks: list[Any]) -> Any:
    """The model a fused operation holds its blocks in: the Constants as results named by role."""
    import openvino as ov

    body = ov.Model(blocks, [], "blocks")
    for result, name in zip(body.get_results(), BODY_BLOCKS[op_type], strict=True):
        result.set_friendly_name(name)
    return body


def _is_silu(node: Any) -> bool:
    """Swish with beta 1 (given or left out): x * sigmoid(x)."""
    if node.get_type_name() != "Swish":
        return False
    beta = _source(node.input_value(1)) if node.get_input_size() > 1 else None
    return beta is None or (beta.get_type_name() == "Constant" and bool(np.all(np.asarray(beta.data) == 1)))


def _int8_rows(table: np.ndarray, keep: list[np.ndarray]) -> Any:
    """An embedding table in int8 with an f16 scale per row, decompressed as OpenVINO's INT8
    exports are (the CPU plugin gathers from the int8 rows): it is read a row per token, so
    its size is memory, not speed, and FP16 would make it the largest part of the file."""
    from openvino import opset13 as ops

    scale = (np.abs(table).max(axis=1, keepdims=True) / 127).astype(np.float16)
    safe = np.where(scale == 0, np.float16(1), scale).astype(np.float32)
    keep += [np.clip(np.rint(table / safe), -127, 127).astype(np.int8), scale]
    rows = ops.multiply(ops.convert(_shared(keep[-2]), "f16"), _shared(keep[-1]))
    return ops.convert(rows, "f32").output(0)


def _is_embedding(op: Any) -> bool:
    """A Gather of token ids (not, say, of a rotary table by positions)."""
    if op.get_type_name() != "Gather":
        return False
    node = _source(op.input_value(1))
    return node.get_type_name() == "Parameter" and "input_ids" in node.output(0).get_names()


def _shared(data: np.ndarray) -> Any:
    from openvino import opset13 as ops

    return ops.constant(data, shared_memory=True).output(0)


def logits_matmul(model: Any) -> Any:
    """The matmul (OpenVINO's or a kernel's) that makes the model's first output, the logits,
    found through a tail of Convert / scaling / soft-capping ops; None without one."""
    node = model.output(0).get_node().input_value(0).get_node()
    for _ in range(8):
        if node.get_type_name() in ("MatMul", *OPS.values()):
            return node
        inputs = [v.get_node() for v in node.input_values() if v.get_node().get_type_name() != "Constant"]
        if not inputs:
            return None
        node = inputs[0]
    return None


def _weights(op: Any) -> np.ndarray | None:
    """A weight matmul's [N, K] weights (x @ W.T with W a constant, possibly converted), else None."""
    attrs = op.get_attributes()
    if attrs["transpose_a"] or not attrs["transpose_b"] or op.get_output_element_type(0).get_type_name() != "f32":
        return None
    return _constant(op.input_value(1))


def _source(value: Any) -> Any:
    """The node behind ``value`` through any Converts."""
    node = value.get_node()
    while node.get_type_name() == "Convert":
        node = node.input_value(0).get_node()
    return node


def _constant(value: Any) -> np.ndarray | None:
    """A 2-D float constant behind ``value`` (through Converts) as float32, else None."""
    node = _source(value)
    if (node.get_type_name() != "Constant" or len(node.get_output_shape(0)) != 2
            or not node.get_output_element_type(0).is_real()):
        return None
    return np.asarray(node.data, dtype=np.float32)


@cache
def _op_class(name: str) -> type:
    """The operation as the IR names it (``Q4MatMul``, ``Q8MatMul``, ``Q4MLP`` or
    ``Q4MatMulAdd``, opset ``extension``): a Python stand-in with the kernel's shapes (outputs: the
    last blob's, or the activations' for an operation whose blobs are its body's), enough to write
    the IR; the kernel's library reads it back."""
    import openvino as ov

    class BlockMatMul(ov.Op):
        def __init__(self, inputs: list[Any] | None = None, body: Any = None) -> None:
            self._body = body
            super().__init__(self, inputs)

        def validate_and_infer_types(self) -> None:
            shape = self.get_input_partial_shape(0)
            if self._body is None:
                last = self.get_input_size() - 1
                shape[shape.rank.get_length() - 1] = ov.Dimension(self.get_input_partial_shape(last)[0].get_length() * ROWS)
            self.set_output_type(0, ov.Type.f32, shape)

        def clone_with_new_inputs(self, new_inputs: list[Any]) -> BlockMatMul:
            return BlockMatMul(new_inputs, self._body)

        def visit_attributes(self, visitor: Any) -> bool:
            if self._body is not None:
                visitor.on_attributes({"body": self._body})
            return True

    BlockMatMul.__name__ = BlockMatMul.__qualname__ = name
    return BlockMatMul
