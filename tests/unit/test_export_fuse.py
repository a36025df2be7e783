"""Fused projections compute what the separate ones did, and only like weights are fused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

from vinolm.export.fuse import fuse_projections

K = 128
EXACT = {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}


def _int4_grouped(rng: np.random.Generator, out: int, group: int = 32) -> ov.Output:
    """NNCF's asymmetric grouped INT4: u4 [out, groups, group] - zero point, * scale, reshaped."""
    shape = [out, K // group, group]
    weights = ops.convert(ops.constant(rng.integers(0, 16, shape).astype(np.uint8), dtype=ov.Type.u4), "f16")
    zero = ops.convert(ops.constant(rng.integers(0, 16, [out, K // group, 1]).astype(np.uint8), dtype=ov.Type.u4), "f16")
    scale = ops.constant(rng.uniform(0.01, 0.1, [out, K // group, 1]).astype(np.float16))
    flat = ops.reshape(ops.multiply(ops.subtract(weights, zero), scale), np.array([out, K], np.int64), False)
    return ops.convert(flat, "f32").output(0)


def _int8_channel(rng: np.random.Generator, out: int) -> ov.Output:
    """NNCF's symmetric INT8: i8 [out, in] * scale [out, 1]."""
    weights = ops.convert(ops.constant(rng.integers(-128, 128, [out, K]).astype(np.int8)), "f16")
    scale = ops.constant(rng.uniform(0.001, 0.01, [out, 1]).astype(np.float16))
    return ops.convert(ops.multiply(weights, scale), "f32").output(0)


def _model(path: Path) -> Path:
    """q, k (INT4) and v (INT8, as at a mixed ratio) on one input; on another, gate (into
    Swish) and up as in an MLP, and two projections whose sum is taken; a matmul of two
    activations, which has no weights to fuse."""
    rng = np.random.default_rng(0)
    x = ops.parameter([1, -1, K], np.float32, name="x")
    h = ops.relu(x)
    q, k, v = (ops.matmul(x, w, False, True) for w in (_int4_grouped(rng, 64), _int4_grouped(rng, 32),
                                                       _int8_channel(rng, 32)))
    gate, up, a, b = (ops.matmul(h, _int4_grouped(rng, 96), False, True) for _ in range(4))
    scores = ops.matmul(q, q, False, True)
    mlp = ops.multiply(ops.swish(gate), up)
    outputs = [ops.result(n) for n in (q, k, v, mlp, ops.add(a, b), scores)]
    ov.save_model(ov.Model(outputs, [x]), path / "openvino_model.xml", compress_to_fp16=False)
    return path / "openvino_model.xml"


def _run(xml: Path, x: np.ndarray) -> list[np.ndarray]:
    compiled = ov.Core().compile_model(xml, "CPU", EXACT)
    return [v.copy() for v in compiled(x).values()]


def _matmuls(xml: Path) -> int:
    return sum(op.get_type_name() == "MatMul" for op in ov.Core().read_model(xml).get_ordered_ops())


def test_fused_projections_compute_what_the_separate_ones_did(tmp_path: Path) -> None:
    xml = _model(tmp_path)
    x = np.random.default_rng(1).standard_normal([1, 5, K]).astype(np.float32)
    before, count = _run(xml, x), _matmuls(xml)
    # q+k (v is INT8: left alone), up+a+b (gate's Swish stays inside its matmul)
    assert fuse_projections(xml) == 3
    assert _matmuls(xml) == count - 3
    assert not list(tmp_path.glob(".fused-*")), "the temporary IR was left behind"
    for old, new in zip(before, _run(xml, x), strict=True):
        np.testing.assert_array_equal(old, new)


def test_a_model_without_projections_to_fuse_is_left_untouched(tmp_path: Path) -> None:
    x = ops.parameter([1, -1, K], np.float32, name="x")
    w = _int8_channel(np.random.default_rng(0), 16)
    xml = tmp_path / "openvino_model.xml"
    ov.save_model(ov.Model([ops.result(ops.matmul(x, w, False, True))], [x]), xml)
    stamp = xml.stat().st_mtime_ns
    assert fuse_projections(xml) == 0
    assert xml.stat().st_mtime_ns == stamp


@pytest.mark.parametrize("kind", [ov.Type.u8, ov.Type.i8])
def test_weights_of_different_types_are_not_fused(tmp_path: Path, kind: ov.Type) -> None:
    rng = np.random.default_rng(2)
    x = ops.parameter([1, -1, K], np.float32, name="x")
    mine = ops.convert(ops.multiply(ops.convert(ops.constant(rng.integers(0, 100, [16, K]).astype(np.int8),
                                                             dtype=kind), "f16"),
                                    ops.constant(np.full([16, 1], 0.01, np.float16))), "f32")
    other = _int4_grouped(rng, 16)
    outs = [ops.result(ops.matmul(x, w, False, True)) for w in (mine, other)]
    xml = tmp_path / "openvino_model.xml"
    ov.save_model(ov.Model(outs, [x]), xml)
    assert fuse_projections(xml) == 0


def test_packed_rows_that_end_mid_byte_are_not_fused(tmp_path: Path) -> None:
    """u4 rows of 127 values end in the middle of a byte: their buffers cannot simply follow each other."""
    rng = np.random.default_rng(3)
    x = ops.parameter([1, -1, 127], np.float32, name="x")

    def weights() -> ov.Node:
        packed = ops.constant(rng.integers(0, 16, [8, 127]).astype(np.uint8), dtype=ov.Type.u4)
        return ops.convert(ops.multiply(ops.convert(packed, "f16"), ops.constant(np.full([8, 1], 0.1, np.float16))),
                           "f32")

    xml = tmp_path / "openvino_model.xml"
    ov.save_model(ov.Model([ops.result(ops.matmul(x, weights(), False, True)) for _ in range(2)], [x]), xml)
    assert fuse_projections(xml) == 0
