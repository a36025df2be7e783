"""Tiny random-weight models of the catalog's architectures, built and exported locally.

The test machine has no model hub, yet export, every engine and the parity checks must
run on llama, gpt_neox (Dolly, RedPajama), phi, qwen2, mistral and gemma graphs. A
2-layer model with the real SmolLM2 tokenizer (vocab 49152, copied from the default
model) exports in seconds. Weights are drawn with a large ``initializer_range`` so the
logits are spread out and greedy argmax is never a near-tie: engine parity on these
models is a real check, not a coin toss.

Builds are cached under ``.cache/test-models/`` (gitignored), keyed by a hash of the
config, the seed, the tokenizer and the library versions, so a second test run reuses
them and an upgrade rebuilds them. A file lock per entry lets parallel runs share it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from importlib.metadata import version
from pathlib import Path
from typing import Any

ARCHITECTURES = ("llama", "gpt_neox", "phi", "qwen2", "mistral", "gemma")
CACHE_ROOT = Path(__file__).resolve().parents[1] / ".cache" / "test-models"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
SEED = 20240611
#: Bump when the build recipe changes in a way the config does not show.
RECIPE = 1

_COMMON: dict[str, Any] = {
    "vocab_size": 49152,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 1024,
    "initializer_range": 0.2,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 2,
}
#: What makes each architecture itself: grouped-query attention, partial rotary,
#: parallel residual, tied embeddings, head sizes that differ from hidden / heads.
_SPECIFIC: dict[str, dict[str, Any]] = {
    "llama": {"num_key_value_heads": 2, "head_dim": 16},
    "gpt_neox": {"use_parallel_residual": True},
    "phi": {"num_key_value_heads": 4},
    "qwen2": {"num_key_value_heads": 2},
    "mistral": {"num_key_value_heads": 2, "head_dim": 16},
    "gemma": {"num_key_value_heads": 1, "head_dim": 16},
}


def config_dict(arch: str) -> dict[str, Any]:
    if arch not in _SPECIFIC:
        raise ValueError(f"no tiny recipe for {arch!r}; have {', '.join(ARCHITECTURES)}")
    return {"model_type": arch, **_COMMON, **_SPECIFIC[arch]}


@cache
def tokenizer_source() -> Path:
    """The default model's folder: its HF tokenizer files become the tiny models' tokenizer."""
    from vinolm.models import DEFAULT_MODEL, prepare

    return prepare(DEFAULT_MODEL, "int8", progress=lambda _: None).path


def _key(arch: str) -> str:
    tokenizer = tokenizer_source() / "tokenizer.json"
    material = {
        "config": config_dict(arch),
        "seed": SEED,
        "recipe": RECIPE,
        "tokenizer": hashlib.sha1(tokenizer.read_bytes()).hexdigest(),
        "versions": [version(p) for p in ("torch", "transformers", "optimum-intel", "nncf", "openvino")],
    }
    digest = hashlib.sha1(json.dumps(material, sort_keys=True).encode()).hexdigest()[:10]
    return f"{arch}-{digest}"


@contextmanager
def _locked(name: str) -> Iterator[None]:
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with open(CACHE_ROOT / f"{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def hf_folder(arch: str) -> Path:
    """A saved Hugging Face model of ``arch`` with random weights and the SmolLM2 tokenizer."""
    key = _key(arch)
    folder = CACHE_ROOT / key / "hf"
    with _locked(key):
        if not (folder / "config.json").is_file():
            folder.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".hf-"))
            try:
                _build_hf(arch, tmp)
                tmp.rename(folder)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _build_hf(arch: str, out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    settings = config_dict(arch)
    config = AutoConfig.for_model(settings.pop("model_type"), **settings)
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(out)
    GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=2).save_pretrained(out)
    source = tokenizer_source()
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, out / name)


def exported(arch: str, weight_format: str = "int8") -> Path:
    """The OpenVINO export of the tiny ``arch`` model, built on first use and again whenever
    vinolm would export it differently now (``export_model`` reuses a matching one)."""
    from vinolm.export import ExportOptions, export_model

    source = hf_folder(arch)
    key = source.parent.name
    output = source.parent / weight_format
    with _locked(key):
        export_model(str(source), output, ExportOptions(weight_format=weight_format),
                     source_kind="hf", progress=lambda _: None)
    return output
