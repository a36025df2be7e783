"""The q4_1 weight format end to end: export, vinolm's kernel in every engine, the server's batching.

With int8 activations a near-tie can fall either way where the attention kernel sums in
another order (genai's paged attention), as on CPUs where OpenVINO quantizes activations
itself (test_engine_parity.py); genai is compared on the stateful model (SDPA) there, and
with paged attention on a tiny model, whose logits have no near-ties.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.integration.conftest import F32
from tests.integration.test_engine_parity import GREEDY, PROMPTS, SDPA, assert_agree, token_ids

from vinolm.engines import Engine, EngineOptions, load_engine
from vinolm.engines.genai_logits import sampled_rows_folder
from vinolm.export import read_record
from vinolm.kernels import KERNEL_LAYOUT, missing_cpu_features
from vinolm.models import DEFAULT_MODEL, PreparedModel, prepare
from vinolm.types import Request

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(bool(missing_cpu_features()), reason="the q4_1 kernel needs AVX2, FMA and F16C")]

Loader = Callable[..., Engine]


@pytest.fixture(scope="module")
def tiny_q4(tiny_model: Callable[..., Path]) -> Path:
    return tiny_model("llama", "q4_1")


@pytest.fixture(scope="module")
def default_q4() -> Path:
    return prepare(DEFAULT_MODEL, "q4_1", progress=lambda _: None).path


def test_export_records_every_matmul_in_blocks(tiny_q4: Path, default_q4: Path) -> None:
    """Every hidden matmul in 4-bit blocks, the output layer (lm_head) in 8-bit ones, the embedding in int8;
    gate, up and down one operation where the export fuses, and o_proj one with the residual added to it
    where it is square (the default model's is)."""
    for folder, matmuls in ((tiny_q4, 2 * 5), (default_q4, 30 * 5)):  # fused q/k/v where the CPU fuses
        record = read_record(folder)
        assert record["weight_format"] == "q4_1" and record["kernel_layout"] == KERNEL_LAYOUT
        assert record["layers"].get("q4_1 g32", 0) >= matmuls and record["layers"]["q8_0 g32"] == 1
        assert record["layers"]["int8 channel-wise"] == 1 and "fp16" not in record["layers"]
        ir = (folder / "openvino_model.xml").read_text()
        assert ir.count('type="Q8MatMul"') == 1
        mlps = matmuls // 5 if record["fuse"] else 0  # where the export fuses, each layer's MLP is one Q4MLP
        assert record.get("fused_mlps", 0) == ir.count('type="Q4MLP"') == mlps, record
        assert record.get("fused_matmul_adds", 0) == ir.count('type="Q4MatMulAdd"'), record
    assert read_record(default_q4).get("fused_matmul_adds") == (30 if read_record(default_q4)["fuse"] else None)


@pytest.mark.parametrize("model", ["tiny", "default"])
def test_engines_pick_identical_tokens(model: str, tiny_q4: Path, default_q4: Path, engine: Loader) -> None:
    folder = tiny_q4 if model == "tiny" else default_q4
    results = {name: token_ids(engine(name, folder, **(SDPA if name == "genai" else {})), GREEDY)
               for name in ("genai", "native", "optimum")}
    assert all(len(sequences[0]) == GREEDY.max_new_tokens for sequences in results["optimum"])
    assert_agree(results)


def test_batched_requests_answer_as_one_at_a_time(tiny_q4: Path, engine: Loader) -> None:
    """Continuous batching (the server's) puts several sequences' tokens in one kernel call:
    each row is quantized and multiplied on its own, so the answers are those of requests
    run alone."""
    alone = token_ids(engine("genai", tiny_q4), GREEDY)
    batched = load_engine("genai", PreparedModel.open(tiny_q4), EngineOptions(ov_config=dict(F32), batching=True))
    try:
        with concurrent.futures.ThreadPoolExecutor(len(PROMPTS)) as pool:
            together = list(pool.map(lambda p: batched.complete(Request(prompt=p, params=GREEDY)).token_ids,
                                     PROMPTS))
    finally:
        batched.close()
    assert together == alone


def test_paged_genai_makes_logits_for_the_rows_it_samples_and_answers_as_the_native_engine(
        tiny_q4: Path, engine: Loader) -> None:
    """genai's paged pipelines load the export wired to their row indices (genai_logits.py), so a
    prompt's pass multiplies one row by the output layer; the answers are the native engine's."""
    assert sampled_rows_folder(tiny_q4) != tiny_q4
    assert token_ids(engine("genai", tiny_q4), GREEDY) == token_ids(engine("native", tiny_q4), GREEDY)
