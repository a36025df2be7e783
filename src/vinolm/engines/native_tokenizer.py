"""Text <-> token ids through openvino-tokenizers' IR, with nothing but the OpenVINO runtime.

The exported tokenizer always adds the special tokens of its post-processor template and
the detokenizer always skips special tokens. openvino-genai switches both at run time by
rewriting the graphs; we do the cheap half of that: the detokenizer's list of ids to skip
becomes an input, and special tokens are dropped after encoding when not wanted (the
template says which ones the tokenizer adds, and where).

Detokenizing runs once or twice per streamed token, and an OpenVINO inference costs a
thread hand-off each time (0.17 ms idle, milliseconds on a busy machine). A byte-level
BPE detokenizer graph is nothing but a vocabulary lookup (``VocabDecoder`` -> join ->
UTF-8 validation), so for such graphs ``decode`` reads the vocabulary's bytes out of the
graph once and joins them in Python (under a microsecond); any other graph (SentencePiece
normalisation, regex clean-ups) keeps running in OpenVINO.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from vinolm.errors import EngineError

_NO_IDS = np.zeros(0, dtype=np.int32)


class TokenizerIR:
    """Compiled tokenizer and detokenizer, each with its own request and lock, so the
    server may tokenize while a generation detokenizes."""

    def __init__(self, core: ov.Core, folder: Path) -> None:
        for name in ("openvino_tokenizer.xml", "openvino_detokenizer.xml"):
            if not (folder / name).is_file():
                raise EngineError(
                    f"{folder} has no {name}; the native engine needs the tokenizer IR "
                    "(re-export the model with vinolm, or use --engine genai)"
                )
        tokenizer = core.read_model(folder / "openvino_tokenizer.xml")
        self._prefix, self._suffix = _special_affixes(tokenizer)
        self._encoder = core.compile_model(tokenizer, "CPU").create_infer_request()
        detokenizer = core.read_model(folder / "openvino_detokenizer.xml")
        self.lookup = VocabLookup.from_model(detokenizer)
        self._skip_ids = _expose_skip_ids(detokenizer)
        self._decoder = core.compile_model(detokenizer, "CPU").create_infer_request()
        self._encode_lock = threading.Lock()
        self._decode_lock = threading.Lock()

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        with self._encode_lock:
            self._encoder.infer([np.array([text])])
            ids: list[int] = self._encoder.get_output_tensor(0).data[0].tolist()
        if add_special_tokens:
            return ids
        start = len(self._prefix) if ids[: len(self._prefix)] == self._prefix else 0
        end = len(ids) - len(self._suffix) if self._suffix and ids[-len(self._suffix) :] == self._suffix else len(ids)
        return ids[start:end]

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        if self.lookup is not None:
            return self.lookup.decode(ids, skip_special_tokens)
        return self._decode_ir(ids, skip_special_tokens)

    def _decode_ir(self, ids: list[int], skip_special_tokens: bool) -> str:
        """``start_async`` + ``wait`` skips building the result dict that ``infer`` returns."""
        skip = self._skip_ids if skip_special_tokens else _NO_IDS
        with self._decode_lock:
            self._decoder.set_input_tensor(0, ov.Tensor(np.array([ids], dtype=np.int64)))
            if self._skip_ids is not None:
                self._decoder.set_input_tensor(1, ov.Tensor(skip))
            self._decoder.start_async()
            self._decoder.wait()
            text = str(self._decoder.get_output_tensor(0).str_data[0])
        return text


def _special_affixes(tokenizer: ov.Model) -> tuple[list[int], list[int]]:
    """Special token ids the tokenizer puts before and after a single text, read from its
    post-processor template (``{"single": {"ids": [1, -1]}}``: -1 is the text)."""
    if not tokenizer.has_rt_info("processed_post_processor_template"):
        return [], []
    template = json.loads(tokenizer.get_rt_info("processed_post_processor_template").astype(str))
    ids: list[int] = template.get("single", {}).get("ids", [-1])
    text_at = [i for i, value in enumerate(ids) if value < 0]
    if not text_at:
        return [], []
    return ids[: text_at[0]], ids[text_at[-1] + 1 :]


#: The operations of a detokenizer that only looks tokens up (byte-level BPE exports).
_LOOKUP_OPS = frozenset(
    {"Parameter", "Convert", "Constant", "VocabDecoder", "FuzeRagged", "UTF8Validate", "StringTensorPack", "Result"}
)


class VocabLookup:
    """A detokenizer graph that is a pure vocabulary lookup, run in Python."""

    def __init__(self, vocab: list[bytes], skip_ids: frozenset[int]) -> None:
        self._vocab = vocab
        self._skip = skip_ids

    @classmethod
    def from_model(cls, detokenizer: ov.Model) -> VocabLookup | None:
        """The graph's own vocabulary and skip list, when the graph only looks tokens up
        and replaces invalid UTF-8; None for any other graph."""
        ops = detokenizer.get_ordered_ops()
        if {op.get_type_name() for op in ops} - _LOOKUP_OPS:
            return None
        decoders = [op for op in ops if op.get_type_name() == "VocabDecoder"]
        validators = [op for op in ops if op.get_type_name() == "UTF8Validate"]
        if len(decoders) != 1 or len(validators) != 1 or not validators[0].get_attributes().get("replace_mode"):
            return None
        parts = [decoders[0].input_value(i).get_node() for i in range(1, decoders[0].get_input_size())]
        if len(parts) not in (3, 4) or any(part.get_type_name() != "Constant" for part in parts):
            return None
        begins, ends, chars = (part.get_data() for part in parts[:3])
        raw = chars.tobytes()
        vocab = [raw[b:e] for b, e in zip(begins.tolist(), ends.tolist(), strict=True)]
        skip = frozenset(parts[3].get_data().tolist()) if len(parts) == 4 else frozenset()
        return cls(vocab, skip)

    @classmethod
    def from_folder(cls, folder: Path) -> VocabLookup | None:
        """The lookup of ``folder``'s detokenizer IR, if it has one of that kind."""
        import openvino_tokenizers  # noqa: F401  (registers the tokenizer operations)

        xml = folder / "openvino_detokenizer.xml"
        return cls.from_model(ov.Core().read_model(xml)) if xml.is_file() else None

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        """Like ``VocabDecoder``, unknown ids decode to nothing; invalid UTF-8 becomes U+FFFD
        (for garbage bytes the count of U+FFFD may differ from ``UTF8Validate``'s, never
        for valid text or an unfinished character)."""
        vocab, size = self._vocab, len(self._vocab)
        skip = self._skip if skip_special_tokens else ()
        return b"".join([vocab[i] for i in ids if 0 <= i < size and i not in skip]).decode("utf-8", "replace")


def _expose_skip_ids(detokenizer: ov.Model) -> Any:
    """Make the detokenizer's constant list of special ids to skip a second input, so one
    compiled model serves ``skip_special_tokens`` True and False. Returns the default
    list, or None when the graph has no such list (then specials are never skipped)."""
    for node in detokenizer.get_ordered_ops():
        if node.get_type_name() != "VocabDecoder" or node.get_input_size() < 5:
            continue
        constant = node.input_value(4).get_node()
        if constant.get_type_name() != "Constant":
            return None
        skip = np.ascontiguousarray(constant.get_data())
        parameter = ov.opset13.parameter([-1], ov.Type(skip.dtype), name="skip_ids")
        node.input(4).replace_source_output(parameter.output(0))
        detokenizer.add_parameters([parameter])
        detokenizer.validate_nodes_and_infer_types()
        return skip
    return None
