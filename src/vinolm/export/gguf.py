"""GGUF file -> Hugging Face folder (dequantized weights + a faithful tokenizer).

transformers dequantizes GGUF weights well, but its GGUF tokenizer conversion maps
byte-level BPE vocabularies of llama-architecture models (SmolLM2, Llama 3, Qwen)
to a SentencePiece-style tokenizer: BOS/EOS come out wrong and spaces decode as
``<|endoftext|>`` once converted to OpenVINO. For ``tokenizer.ggml.model == "gpt2"``
we therefore rebuild the tokenizer ourselves from the GGUF vocabulary and merges,
with the pre-tokenizer llama.cpp uses for the file's ``tokenizer.ggml.pre``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vinolm.errors import ExportError

# llama.cpp pre-tokenizer names -> whether digits are split one by one before the
# GPT-2 byte-level regex. Others fall back to transformers' converter.
_GPT2_PRE_TYPES = {"gpt2": False, "smollm": True, "default": False}
_CONTROL = 3  # gguf TokenType.CONTROL


def read_metadata(path: Path) -> dict[str, Any]:
    """GGUF key/values, with the big tokenizer arrays left out unless asked for."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except Exception as exc:  # gguf raises bare ValueErrors on junk files
        raise ExportError(f"{path} is not a readable GGUF file: {exc}") from exc
    meta: dict[str, Any] = {}
    for key, fld in reader.fields.items():
        try:
            meta[key] = fld.contents()
        except Exception:  # noqa: BLE001, S112 - some array types have no contents(); we do not need them
            continue
    return meta


def gguf_to_hf(path: Path, out_dir: Path) -> Path:
    """Write a loadable HF folder for ``path`` into ``out_dir`` and return it."""
    from transformers import AutoModelForCausalLM

    meta = read_metadata(path)
    arch = meta.get("general.architecture", "?")
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype="float32"
        )
    except Exception as exc:
        raise ExportError(f"cannot dequantize {path.name} (architecture {arch}): {exc}") from exc
    tokenizer = build_tokenizer(path, meta)
    bos, eos = meta.get("tokenizer.ggml.bos_token_id"), meta.get("tokenizer.ggml.eos_token_id")
    for cfg in (model.config, model.generation_config):
        if bos is not None:
            cfg.bos_token_id = int(bos)
        if eos is not None:
            cfg.eos_token_id = int(eos)
    ctx = meta.get(f"{arch}.context_length")
    if ctx:
        model.config.max_position_embeddings = int(ctx)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def build_tokenizer(path: Path, meta: dict[str, Any]) -> Any:
    """A transformers fast tokenizer equivalent to the one llama.cpp uses for ``path``."""
    model_kind = meta.get("tokenizer.ggml.model")
    pre = meta.get("tokenizer.ggml.pre", "default")
    if model_kind == "gpt2" and pre in _GPT2_PRE_TYPES:
        return _byte_level_bpe(meta, split_digits=_GPT2_PRE_TYPES[pre])
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def _byte_level_bpe(meta: dict[str, Any], split_digits: bool) -> Any:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tokens: list[str] = list(meta["tokenizer.ggml.tokens"])
    types: list[int] = list(meta.get("tokenizer.ggml.token_type", [1] * len(tokens)))
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.pre_tokenizer = (
        pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
        if split_digits
        else byte_level
    )
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = [AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, types) if k == _CONTROL]
    backend.add_special_tokens(specials)

    def tok(key: str) -> str | None:
        idx = meta.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[int(idx)] if idx is not None and int(idx) < len(tokens) else None

    hf = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=tok("bos"),
        eos_token=tok("eos"),
        unk_token=tok("unknown"),
        pad_token=tok("padding") or tok("eos"),
        clean_up_tokenization_spaces=False,
    )
    template = meta.get("tokenizer.chat_template")
    if template:
        hf.chat_template = template
    if meta.get("tokenizer.ggml.add_bos_token"):
        hf.add_bos_token = True
    return hf


def describe(path: Path) -> str:
    """One line for logs: what the GGUF holds."""
    meta = read_metadata(path)
    arch = meta.get("general.architecture", "?")
    return json.dumps({"name": meta.get("general.name"), "architecture": arch})
