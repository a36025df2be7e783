"""HF tokenizer -> OpenVINO tokenizer/detokenizer IR, plus the HF files themselves.

The round-trip check exists because a silently broken tokenizer (spaces decoding as
special tokens, wrong BOS) produces fluent-looking garbage that no later test of the
model would pin on the tokenizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vinolm.errors import ExportError

PROBES = (
    "Hello world, how are you today?",
    "  two spaces, tabs\tand\nnew lines 12345",
    "日本語のテキストと中文 🙂",
)


def export_tokenizer(source: str, out: Path, trust_remote_code: bool = False, detokenizer: bool = True) -> None:
    """Save the HF tokenizer and its OpenVINO IR; an embedding model needs no detokenizer."""
    import openvino as ov
    from openvino_tokenizers import convert_tokenizer
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    hf.save_pretrained(out)
    try:
        converted = convert_tokenizer(hf, with_detokenizer=detokenizer, skip_special_tokens=True)
    except Exception as exc:
        raise ExportError(f"cannot convert the tokenizer of {source} to OpenVINO: {exc}") from exc
    ov_tok, ov_detok = converted if detokenizer else (converted, None)
    ov.save_model(ov_tok, str(out / "openvino_tokenizer.xml"))
    if ov_detok is not None:
        ov.save_model(ov_detok, str(out / "openvino_detokenizer.xml"))
    check_round_trip(hf, out)


def check_round_trip(hf: Any, folder: Path) -> None:
    """OpenVINO tokenizer ids == HF ids, and detokenized text == the probe text."""
    import numpy as np
    import openvino as ov
    import openvino_tokenizers  # noqa: F401  (registers the tokenizer operations)

    core = ov.Core()
    tok = core.compile_model(folder / "openvino_tokenizer.xml", "CPU")
    has_detok = (folder / "openvino_detokenizer.xml").is_file()
    detok = core.compile_model(folder / "openvino_detokenizer.xml", "CPU") if has_detok else None
    for text in PROBES:
        expected = hf(text).input_ids
        got = tok([text])["input_ids"][0].tolist()
        if got != expected:
            raise ExportError(
                f"OpenVINO tokenizer disagrees with the HF tokenizer on {text!r}: {got} != {expected}"
            )
        if detok is None:
            continue
        back = detok(np.array([expected], dtype=np.int64))["string_output"][0]
        if back.strip() != text.strip():
            raise ExportError(f"detokenizer round trip failed: {text!r} came back as {back!r}")
