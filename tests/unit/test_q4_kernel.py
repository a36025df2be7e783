"""The q4_1 kernels compute llama.cpp's Q4_1 x Q8_1 and Q8_0 x Q8_1 arithmetic, and the export's
blocks hold the weights.

The reference below is written from the formats' definition (numpy, float64), not from the
kernel: activations rounded to int8 per block of 32 at scale max|x|/127, each block's dot
product d*dx*sum(q*xq) (+ m*dx*sum(xq) for Q4_1) with the weights the blob holds. The kernel
must agree to float32 rounding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

from vinolm.cpu import cpu_kind
from vinolm.engines.genai_logits import SAMPLED_ROWS, sampled_rows_folder
from vinolm.errors import EngineError
from vinolm.export.blocks import (
    BLOCK,
    OPS,
    _op_class,
    dequantize,
    dequantize_q8_0,
    quantize,
    quantize_q8_0,
    to_q4_1,
)
from vinolm.kernels import library, missing_cpu_features

pytestmark = pytest.mark.skipif(bool(missing_cpu_features()), reason="the q4_1 kernel needs AVX2, FMA and F16C")


#: Each layout's quantizer and the weights its blob holds.
FORMATS = {"q4_1 g32": (quantize, dequantize), "q8_0 g32": (quantize_q8_0, dequantize_q8_0)}


def _reference(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    w = w.astype(np.float64)
    rows = x.reshape(-1, x.shape[-1]).astype(np.float32)
    blocks = rows.reshape(rows.shape[0], -1, BLOCK)
    scale = np.abs(blocks).max(axis=-1) / np.float32(127)
    inverse = np.divide(np.float32(1), scale, out=np.zeros_like(scale), where=scale != 0)
    q = np.rint(blocks * inverse[..., None])
    xq = (q * scale[..., None]).reshape(rows.shape).astype(np.float64)
    return (xq @ w.T).reshape(*x.shape[:-1], w.shape[0])


def _compiled(tmp_path: Path, layout: str, blob: np.ndarray, k: int) -> ov.CompiledModel:
    x = ops.parameter([-1, -1, k], np.float32, name="x")
    node = _op_class(OPS[layout])([x.output(0), ops.constant(blob).output(0)])
    xml = tmp_path / "q4.xml"
    ov.save_model(ov.Model([node.output(0)], [x]), xml, compress_to_fp16=False)
    core = ov.Core()
    core.add_extension(str(library()))
    return core.compile_model(core.read_model(xml), "CPU")


@pytest.mark.parametrize("layout", FORMATS)
@pytest.mark.parametrize(("n", "k", "rows"), [(64, 96, 1), (40, 576, 3), (8, 32, 7), (16, 64, 11)])
def test_kernel_matches_the_formats_arithmetic(tmp_path: Path, layout: str, n: int, k: int, rows: int) -> None:
    rng = np.random.default_rng(n + k)
    pack, unpack = FORMATS[layout]
    blob = pack(rng.standard_normal((n, k)).astype(np.float32))
    x = rng.standard_normal((1, rows, k)).astype(np.float32)
    x[0, 0, :BLOCK] = 0  # an all-zero block: scale 0, no division by it
    x[0, -1, -BLOCK:] = -x[0, -1, -BLOCK:]  # signs flipped: Q8_0 multiplies signed by signed
    got = _compiled(tmp_path, layout, blob, k)(x)[0]
    want = _reference(x, unpack(blob))
    assert got.shape == (1, rows, n)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5 * np.abs(want).max())


def test_blocks_hold_the_weights_to_a_sixteenth_of_their_range() -> None:
    w = np.random.default_rng(1).standard_normal((16, 64)).astype(np.float32)
    back = dequantize(quantize(w))
    span = np.ptp(w.reshape(16, 2, BLOCK), axis=-1)
    assert (np.abs(back - w).reshape(16, 2, BLOCK).max(axis=-1) <= span / 30 + 1e-3).all()


def test_q4_1_weights_come_back_exactly() -> None:
    """Weights that are Q4_1 already (a GGUF's, dequantized) are re-quantized to themselves."""
    rng = np.random.default_rng(2)
    scale = rng.uniform(0.01, 0.1, (16, 4)).astype(np.float16).astype(np.float32)
    minimum = rng.uniform(-1, 0, (16, 4)).astype(np.float16).astype(np.float32)
    q = rng.integers(0, 16, (16, 4, BLOCK))
    q[..., 0], q[..., 1] = 0, 15  # llama.cpp's blocks span their range
    w = (q * scale[..., None] + minimum[..., None]).reshape(16, 4 * BLOCK)
    np.testing.assert_allclose(dequantize(quantize(w)), w, rtol=0, atol=2e-3 * np.abs(w).max())


def test_q8_0_weights_come_back_exactly() -> None:
    """A GGUF's Q8_0 weights (its output layer, dequantized) are re-quantized to themselves, bit for bit."""
    rng = np.random.default_rng(4)
    scale = rng.uniform(0.001, 0.01, (16, 4)).astype(np.float16).astype(np.float32)
    q = rng.integers(-127, 128, (16, 4, BLOCK))
    q[..., 0] = 127 * rng.choice([-1, 1], (16, 4))  # llama.cpp's blocks reach +-127
    w = (q * scale[..., None]).reshape(16, 4 * BLOCK).astype(np.float32)
    assert np.array_equal(dequantize_q8_0(quantize_q8_0(w)), w)


def _fp16_matmul(x: object, rng: np.random.Generator, n: int, k: int) -> object:
    return ops.matmul(x, ops.convert(ops.constant(rng.standard_normal((n, k)).astype(np.float16)), "f32"),
                      False, True)


def test_rewrite_puts_the_logits_matmul_in_8_bits_and_the_embedding_in_int8(tmp_path: Path) -> None:
    """Hidden matmuls become 4-bit blocks; the one that makes the logits, behind a scaling, 8-bit
    ones; the table gathered by token ids int8 rows; a table gathered by positions stays FP16."""
    rng = np.random.default_rng(5)
    ids = ops.parameter([1, -1], np.int64, name="input_ids")
    ids.output(0).get_tensor().set_names({"input_ids"})
    positions = ops.parameter([1, -1], np.int64, name="positions")
    table = ops.constant(rng.standard_normal((48, 64)).astype(np.float16))
    rotary = ops.convert(ops.constant(rng.standard_normal((16, 64)).astype(np.float16)), "f32")
    x = ops.add(ops.gather(ops.convert(table, "f32"), ids, 0), ops.gather(rotary, positions, 0))
    hidden = _fp16_matmul(_fp16_matmul(x, rng, 32, 64), rng, 64, 32)
    logits = ops.multiply(_fp16_matmul(hidden, rng, 48, 64), np.float32(0.5))
    xml = tmp_path / "openvino_model.xml"
    ov.save_model(ov.Model([logits.output(0)], [ids, positions]), xml, compress_to_fp16=False)
    inputs = [np.array([[3, 47, 0]]), np.array([[0, 1, 2]])]
    want = ov.Core().compile_model(xml, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(inputs)[0]
    assert to_q4_1(xml, fuse=True) == ({"q4_1 g32": 2, "q8_0 g32": 1, "int8 channel-wise": 1}, 0, 0)
    core = ov.Core()
    core.add_extension(str(library()))
    model = core.read_model(xml)
    types = [op.get_type_name() for op in model.get_ordered_ops()]
    assert types.count("Q4MatMul") == 2 and types.count("Q8MatMul") == 1 and "MatMul" not in types
    tables = sorted(str(op.get_output_element_type(0)) for op in model.get_ordered_ops()
                    if op.get_type_name() == "Constant" and len(op.get_output_shape(0)) == 2
                    and op.get_output_shape(0)[1] == 64 and op.get_output_shape(0)[0] in (16, 48))
    assert tables == ["<Type: 'float16'>", "<Type: 'int8_t'>"]
    got = core.compile_model(model, "CPU")(inputs)[0]
    assert got.shape == want.shape == (1, 3, 48)
    assert np.abs(got - want).max() < 0.2 * np.abs(want).max()


def test_rewrite_keeps_shapes_the_blocks_do_not_fit(tmp_path: Path) -> None:
    """Inputs not a multiple of 32 or outputs not of 8 keep their FP16 weights."""
    rng = np.random.default_rng(3)
    x = ops.parameter([1, -1, 64], np.float32, name="x")
    odd = _fp16_matmul(_fp16_matmul(x, rng, 24, 64), rng, 12, 24)
    xml = tmp_path / "openvino_model.xml"
    ov.save_model(ov.Model([odd.output(0)], [x]), xml, compress_to_fp16=False)
    before = ov.Core().compile_model(xml, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    data = rng.standard_normal((1, 5, 64)).astype(np.float32)
    want = before(data)[0]
    assert to_q4_1(xml, fuse=True) == ({"q4_1 g32": 1, "fp16": 1}, 0, 0)
    core = ov.Core()
    core.add_extension(str(library()))
    got = core.compile_model(core.read_model(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(data)[0]
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 0.2 * np.abs(want).max()
    assert not list(tmp_path.glob(".q4_1-*"))


def test_a_machine_without_a_compiler_is_told_what_to_install(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VINOLM_HOME", str(tmp_path))
    monkeypatch.setenv("CXX", "no-such-compiler")
    with pytest.raises(EngineError, match=r"needs a C\+\+ compiler \(no-such-compiler was not found\)"):
        library()
    assert not list(tmp_path.rglob("*.so"))


def test_missing_cpu_features_are_named() -> None:
    assert missing_cpu_features({"avx", "avx2", "fma", "f16c"}) == []
    assert missing_cpu_features({"avx", "sse4_2"}) == ["avx2", "f16c", "fma"]


def _mlp_model(tmp_path: Path, name: str) -> Path:
    """x -> h = x + o(x) -> h + down(swish(gate(h)) * up(h)) -> a logits matmul, FP16 weights (a
    Llama layer's residual connections, attention aside, and its MLP's shape, small)."""
    rng = np.random.default_rng(6)
    x = ops.parameter([-1, -1, 64], np.float32, name="x")
    h = ops.add(x, _fp16_matmul(x, rng, 64, 64))
    gate, up = _fp16_matmul(h, rng, 96, 64), _fp16_matmul(h, rng, 96, 64)
    down = _fp16_matmul(ops.multiply(ops.swish(gate), up), rng, 64, 96)
    logits = _fp16_matmul(ops.add(h, down), rng, 40, 64)
    xml = tmp_path / name / "openvino_model.xml"
    xml.parent.mkdir()
    ov.save_model(ov.Model([logits.output(0)], [x]), xml, compress_to_fp16=False)
    return xml


def test_a_gated_mlp_becomes_one_operation_that_computes_what_its_five_nodes_did(tmp_path: Path) -> None:
    """Fused: gate, Swish, up, Multiply and down are one Q4MLP, x quantized once for gate and up, and
    a square matmul and the Add of its residual one Q4MatMulAdd, their blocks in their bodies (one input
    of activations each, the residual besides); the output is the unfused graph's, bit for bit where
    OpenVINO's Swish runs its AVX2 code (silu computed as that code does: the default model's answers
    do not move); elsewhere to rounding."""
    fused, plain = _mlp_model(tmp_path, "fused"), _mlp_model(tmp_path, "plain")
    assert to_q4_1(fused, fuse=True) == ({"q4_1 g32": 4, "q8_0 g32": 1}, 1, 1)
    assert to_q4_1(plain, fuse=False) == ({"q4_1 g32": 4, "q8_0 g32": 1}, 0, 0)
    core = ov.Core()
    core.add_extension(str(library()))
    read = core.read_model(fused).get_ordered_ops()
    ops_read = {op.get_type_name(): op for op in read}
    assert "Q4MatMul" not in ops_read and "Swish" not in ops_read
    assert [op.get_type_name() for op in read].count("Add") == 1  # the MLP's residual, after the Q4MLP
    assert ops_read["Q4MLP"].get_input_size() == 1 and ops_read["Q4MatMulAdd"].get_input_size() == 2
    data = np.random.default_rng(7).standard_normal((1, 13, 64)).astype(np.float32)  # 4+4+4+1 rows
    got, want = (core.compile_model(core.read_model(xml), "CPU")(data)[0] for xml in (fused, plain))
    if cpu_kind() == "avx2":
        assert np.array_equal(got, want), np.abs(got - want).max()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-3 * np.abs(want).max())
    step = core.compile_model(core.read_model(fused), "CPU")(data[:, -1:])[0]
    assert np.array_equal(step[0, 0], got[0, -1])  # a token step is bit for bit the prompt pass's last row
    cache = {"CACHE_DIR": str(tmp_path / "cache")}  # a compiled model's cache holds the bodies' blocks
    written, read_back = (core.compile_model(core.read_model(fused), "CPU", cache) for _ in range(2))
    assert read_back.get_property("LOADED_FROM_CACHE") and not written.get_property("LOADED_FROM_CACHE")
    assert np.array_equal(read_back(data)[0], got)


def test_the_output_layer_multiplies_only_the_rows_genai_samples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """genai's paged pipelines load an export whose Q8MatMul takes their ``sampled_tokens_indices``
    (genai_logits.py; genai converts them to i32): those rows' logits, bit for bit the full pass's,
    and none for the rows nobody samples. A folder without a Q8MatMul is loaded as it is."""
    monkeypatch.setenv("VINOLM_HOME", str(tmp_path / "home"))
    xml = _mlp_model(tmp_path, "export")
    to_q4_1(xml, fuse=True)
    (xml.parent / "config.json").write_text("{}")
    folder = sampled_rows_folder(xml.parent)
    assert folder != xml.parent and sampled_rows_folder(xml.parent) == folder  # written once
    assert (folder / "config.json").resolve() == (xml.parent / "config.json").resolve()
    assert (folder / "openvino_model.bin").is_symlink()
    core = ov.Core()
    core.add_extension(str(library()))
    model = core.read_model(folder / "openvino_model.xml")
    assert {i.get_any_name() for i in model.inputs} == {"x", SAMPLED_ROWS}
    data = np.random.default_rng(8).standard_normal((5, 1, 64)).astype(np.float32)  # paged: tokens on axis 0
    full = core.compile_model(core.read_model(xml), "CPU")(data)[0]
    picked = core.compile_model(model, "CPU")({"x": data, SAMPLED_ROWS: np.array([4, 1], np.int64)})[0]
    assert picked.shape == (2, 1, 40) and np.array_equal(picked, full[[4, 1]])
    plain = _mlp_model(tmp_path, "fp16")
    assert sampled_rows_folder(plain.parent) == plain.parent
