"""One weight matmul where the model has several on the same input (q, k and v).

A decode step on 2 cores is dominated by per-node cost as much as by arithmetic: each
projection is its own parallel section with its own activation quantization, and the
small ones (a 135M model's k and v are 192 wide) are mostly overhead. OpenVINO's CPU
plugin merges q/k/v itself only on AMX, and even there, with vinolm's f32 defaults, the
export's merge decoded 3% faster (section 18). The export does it: the projections'
compressed weights (and their scales and zero points) are concatenated along the output
channels, one MatMul computes them all, and a split hands each consumer its part. In f32
the logits are bit for bit the unfused model's; in bf16 the rounding moves as with any
kernel change. Measured in docs/benchmarks.md section 14; which CPU kinds get it is
``layouts.LAYOUTS``.

A matmul whose output goes into an activation (the MLP's gate, into Swish) is left alone:
the plugin computes the activation inside that matmul, and a split between them undoes it
(fusing gate with up too decoded no faster than q/k/v alone and prefilled 6-15% slower in
two of three side-by-side runs). Projections NNCF compressed differently
(INT4 q, INT8 k and v at a mixed ratio) are merged only with those of their own kind.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from vinolm.export.ir import save_in_place

#: Element types stored two or more values per byte (bits per value): concatenated as raw bytes.
_PACKED = {"u4": 4, "i4": 4, "nf4": 4, "f4e2m1": 4, "u2": 2, "u1": 1}
#: The ops NNCF's weight decompression is made of, between the constants and the MatMul.
_CHAIN = {"Constant", "Convert", "Subtract", "Multiply", "Reshape"}
#: Activations the CPU plugin computes inside the matmul that feeds them.
_ACTIVATIONS = {"Swish", "Gelu", "Sigmoid", "Relu", "Tanh", "HSwish", "HSigmoid", "Mish", "Elu", "Clamp",
                "SoftPlus", "Exp"}


def fuse_projections(xml: Path) -> int:
    """Fuse the IR at ``xml`` in place (written beside it, then renamed); returns how many
    matmuls were folded into others (0: the file is untouched)."""
    import openvino as ov

    model = ov.Core().read_model(xml)
    keep: list[np.ndarray] = []  # the new constants' buffers, alive until the model is saved
    folded = sum(_fuse_group(group, keep) for group in _groups(model))
    if not folded:
        return 0
    model.validate_nodes_and_infer_types()
    save_in_place(model, xml, "fused")
    return folded


def _groups(model: Any) -> list[list[Any]]:
    """Weight matmuls that read the same tensor, split by how their weights are stored."""
    by_input: dict[tuple[str, int], list[Any]] = defaultdict(list)
    for op in model.get_ordered_ops():
        if op.get_type_name() == "MatMul" and _is_weight_matmul(op):
            source = op.input_value(0)
            by_input[(source.get_node().get_name(), source.get_index())].append(op)
    groups = []
    for matmuls in by_input.values():
        by_kind: dict[tuple[Any, ...], list[Any]] = defaultdict(list)
        for op in matmuls:
            by_kind[_signature(op.input_value(1).get_node())].append(op)
        groups += [g for g in by_kind.values() if len(g) > 1]
    return groups


def _is_weight_matmul(op: Any) -> bool:
    attrs = op.get_attributes()
    weights = op.input_value(1)
    activated = any(t.get_node().get_type_name() in _ACTIVATIONS for t in op.output(0).get_target_inputs())
    return (not attrs["transpose_a"] and attrs["transpose_b"] and not activated
            and weights.get_partial_shape().is_static and len(weights.get_shape()) == 2
            and _constant_chain(weights.get_node()))


def _constant_chain(node: Any) -> bool:
    kind = node.get_type_name()
    return kind == "Constant" or (kind in _CHAIN and all(_constant_chain(v.get_node()) for v in node.input_values()))


def _signature(node: Any) -> tuple[Any, ...]:
    """What must match for two weight chains to concatenate: ops, element types, and every
    dimension but the output channels."""
    kind = node.get_type_name()
    own = (kind, node.get_output_element_type(0).get_type_name(), tuple(node.get_output_shape(0))[1:])
    if kind == "Constant":
        return own
    if kind == "Reshape":  # its target shape is rebuilt, not concatenated
        return (*own, _signature(node.input_value(0).get_node()))
    return (*own, *(_signature(v.get_node()) for v in node.input_values()))


def _fuse_group(matmuls: list[Any], keep: list[np.ndarray]) -> int:
    from openvino import opset13 as ops

    weights = _concat([m.input_value(1).get_node() for m in matmuls], keep)
    if weights is None:
        return 0
    fused = ops.matmul(matmuls[0].input_value(0), weights, False, True)
    fused.set_friendly_name(matmuls[0].get_friendly_name() + "/vinolm_fused")
    widths = np.array([m.get_output_partial_shape(0)[-1].get_length() for m in matmuls], dtype=np.int64)
    parts = ops.variadic_split(fused, np.int64(-1), widths)
    for i, matmul in enumerate(matmuls):
        matmul.output(0).replace(parts.output(i))
    return len(matmuls) - 1


def _concat(nodes: list[Any], keep: list[np.ndarray]) -> Any:
    """The output of one chain computing the given chains' outputs stacked along axis 0
    (the output channels), or None where they cannot be stacked."""
    from openvino import opset13 as ops

    kind = nodes[0].get_type_name()
    if kind == "Constant":
        return _concat_constants(nodes, keep)
    inputs = [_concat([n.input_value(i).get_node() for n in nodes], keep)
              for i in range(1 if kind == "Reshape" else nodes[0].get_input_size())]
    if any(v is None for v in inputs):
        return None
    if kind == "Convert":
        return ops.convert(inputs[0], nodes[0].get_output_element_type(0)).output(0)
    if kind == "Subtract":
        return ops.subtract(*inputs).output(0)
    if kind == "Multiply":
        return ops.multiply(*inputs).output(0)
    shape = [sum(n.get_output_shape(0)[0] for n in nodes), *list(nodes[0].get_output_shape(0))[1:]]
    return ops.reshape(inputs[0], np.array(shape, dtype=np.int64), False).output(0)


def _concat_constants(nodes: list[Any], keep: list[np.ndarray]) -> Any:
    import openvino as ov

    shapes = [list(n.get_output_shape(0)) for n in nodes]
    if not shapes[0] or all(s[0] == 1 for s in shapes):  # shared by all channels: must be one value
        first = nodes[0].data
        return nodes[0].output(0) if all(np.array_equal(n.data, first) for n in nodes[1:]) else None
    if any(s[0] == 1 for s in shapes):  # one chain broadcasts where another does not
        return None
    element = nodes[0].get_element_type()
    shape = ov.Shape([sum(s[0] for s in shapes), *shapes[0][1:]])
    if (bits := _PACKED.get(element.get_type_name())) is not None:
        if int(np.prod(shapes[0][1:])) * bits % 8:  # a row ends mid-byte: the buffers do not just follow
            return None
        keep.append(np.concatenate([np.asarray(n.data).reshape(-1).view(np.uint8) for n in nodes]))
        tensor = ov.Tensor(keep[-1], shape, element)
    else:
        keep.append(np.ascontiguousarray(np.concatenate([n.data for n in nodes], axis=0)))
        tensor = ov.Tensor(keep[-1], shared_memory=True)
    return ov.op.Constant(tensor).output(0)
