"""Models at the real shapes of the tutorials' 1.1B and 2.8B models (random weights), and the default model widened.

The hub is out of reach and the real checkpoints are gigabytes, yet speed and size per
weight format depend only on the shapes: layer count, widths, heads, vocabulary. So each
shape is rebuilt from its published config with random weights (fp16, to stay well
inside memory: the 2.8B model is 5.6 GB instead of 11 GB in fp32), saved with the
default model's byte-level BPE tokenizer fitted to the shape's vocabulary size, and
exported with ``vinolm.export`` to FP16, INT8 and INT4 (the catalog's tutorial preset),
one format at a time.

Random weights say nothing about how often a draft model's guesses are taken, so one
shape holds real weights instead: the default model's own, widened with zeros into
layers eight times its size (:func:`widen`). It answers as the default model does, which
makes the 135M model a drafter that agrees with it far more often than a real 135M/1.7B
pair would: the cost of drafting for a 1.1B model is real, its acceptance an upper bound::

    python -m vinolm.bench.shapes [--shape tiny-llama-1b-chat] [--format int4 ...]

prints one JSON line: per shape and format the IR folder and its weight bytes.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vinolm.export import WEIGHT_FORMATS
from vinolm.export.report import SizeReport, folder_weight_bytes
from vinolm.models import vinolm_home

#: The formats built unless asked otherwise (``q4_1``, vinolm's own, on request).
FORMATS = ("fp16", "int8", "int4")
#: llama.cpp's quantizations of the same shape (``--peer llama-bench``): its 4-bit
#: workhorse, its k-quant default, and 8 bit.
GGUF_QUANTS = ("Q4_0", "Q4_K_M", "Q8_0")
#: The shapes carry SmolLM2's tokenizer (see :func:`write_tokenizer`): its pre-tokenizer.
PRE_TOKENIZER = "smollm"


@dataclass(frozen=True)
class Shape:
    """A published model config, reduced to what decides speed and size."""

    name: str  # the catalog entry whose shape (and INT4 preset) this is, or a new name
    architecture: str  # "llama" | "gpt_neox"
    config: dict[str, Any]
    #: A catalog model whose real weights the shape carries, widened to ``config``'s widths
    #: (its other settings and its depth stay the model's); None: random weights.
    widens: str | None = None

    @property
    def preset_model(self) -> str:
        """The catalog entry whose INT4 preset exports the shape."""
        return self.widens or self.name

    @property
    def vocab_size(self) -> int:
        return int(self.config["vocab_size"])


SHAPES: dict[str, Shape] = {
    # TinyLlama/TinyLlama-1.1B-Chat-v1.0 config.json
    "tiny-llama-1b-chat": Shape("tiny-llama-1b-chat", "llama", {
        "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22,
        "num_attention_heads": 32, "num_key_value_heads": 4, "vocab_size": 32000,
        "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": False,
    }),
    # databricks/dolly-v2-3b config.json (Pythia-2.8B; red-pajama-3b has the same widths)
    "dolly-v2-3b": Shape("dolly-v2-3b", "gpt_neox", {
        "hidden_size": 2560, "intermediate_size": 10240, "num_hidden_layers": 32,
        "num_attention_heads": 32, "vocab_size": 50280, "max_position_embeddings": 2048,
        "rotary_pct": 0.25, "rotary_emb_base": 10000, "use_parallel_residual": True,
        "layer_norm_eps": 1e-5, "tie_word_embeddings": False,
    }),
    # SmolLM2-135M-Instruct's weights in layers of 1.1B parameters: SmolLM2-1.7B's head size,
    # the 135M's grouping of 3 query heads per KV head and its 30 layers (1.7B has 24).
    "smollm2-135m-wide": Shape("smollm2-135m-wide", "llama", {
        "hidden_size": 1536, "intermediate_size": 6144, "num_attention_heads": 24,
        "num_key_value_heads": 8, "vocab_size": 49152,
    }, widens="smollm2-135m"),
}  # fmt: skip


def shape_root(name: str) -> Path:
    return vinolm_home() / "bench" / "shapes" / name


def gguf_path(name: str, quant: str) -> Path:
    """Where llama.cpp's converter and quantizer leave shape ``name`` as ``quant``."""
    return shape_root(name) / "gguf" / f"{quant}.gguf"


def convert_command(name: str, quants: list[str]) -> list[str]:
    """The job that makes the GGUFs of shape ``name`` from its HF folder (built first)."""
    root = shape_root(name)
    return [sys.executable, "-m", "vinolm.bench.peers.llama_convert", "--hf", str(root / "hf"),
            "--out", str(root / "gguf"), "--pre-tokenizer", PRE_TOKENIZER, *(a for q in quants for a in ("--quant", q))]


def default_tokenizer_file() -> Path:
    """The default model's tokenizer.json (a byte-level BPE of 49152 tokens)."""
    from vinolm.models import prepare

    return prepare(None, "int8").path / "tokenizer.json"


def fit_vocab(tokenizer: dict[str, Any], size: int) -> dict[str, Any]:
    """A copy of a BPE ``tokenizer.json`` holding exactly ``size`` ids.

    Smaller: keep ids below ``size`` and the merges that only touch kept tokens (BPE
    ids grow with merge order, so what is left is still a valid BPE). Larger: append
    ``<|extra_N|>`` added tokens, as real checkpoints pad their embedding tables.
    """
    data = json.loads(json.dumps(tokenizer))
    model = data["model"]
    if size <= len(model["vocab"]):
        vocab = {tok: i for tok, i in model["vocab"].items() if i < size}
        merges = [m for m in model["merges"] if _merge_parts(m)[0] in vocab and _merge_parts(m)[1] in vocab
                  and "".join(_merge_parts(m)) in vocab]  # fmt: skip
        model["vocab"], model["merges"] = vocab, merges
        data["added_tokens"] = [t for t in data.get("added_tokens", []) if t["id"] < size]
        return data
    start = max(model["vocab"].values()) + 1
    for i in range(start, size):
        data["added_tokens"].append({
            "id": i, "content": f"<|extra_{i}|>", "single_word": False, "lstrip": False,
            "rstrip": False, "normalized": False, "special": False,
        })  # fmt: skip
    return data


def _merge_parts(merge: str | list[str]) -> list[str]:
    return merge.split(" ", 1) if isinstance(merge, str) else list(merge)


def write_tokenizer(folder: Path, size: int) -> None:
    from transformers import PreTrainedTokenizerFast

    source = default_tokenizer_file()
    fitted = fit_vocab(json.loads(source.read_text(encoding="utf-8")), size)
    (folder / "tokenizer.json").write_text(json.dumps(fitted), encoding="utf-8")
    tok = PreTrainedTokenizerFast(
        tokenizer_file=str(folder / "tokenizer.json"),
        bos_token="<|im_start|>", eos_token="<|im_end|>", unk_token="<|endoftext|>", pad_token="<|im_end|>",
    )  # fmt: skip
    if len(tok) != size:
        raise RuntimeError(f"fitted tokenizer has {len(tok)} ids, wanted {size}")
    tok.save_pretrained(folder)


def build_hf(shape: Shape, folder: Path) -> Path:
    """``shape``'s fp16 weights (random or widened) plus a tokenizer; reused when present.

    Written beside ``folder`` and renamed into place, so an interrupted build leaves no
    folder that a later run would take for a finished one."""
    if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
        return folder
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    if shape.widens is None:
        _write_random(shape, partial)
    else:
        _write_widened(shape, partial)
    gc.collect()
    partial.rename(folder)
    return folder


def _write_random(shape: Shape, folder: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        shape.architecture, **shape.config, bos_token_id=1, eos_token_id=2, dtype="float16"
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float16)
    model.save_pretrained(folder, safe_serialization=True)
    del model
    write_tokenizer(folder, shape.vocab_size)


def _write_widened(shape: Shape, folder: Path) -> None:
    """The catalog model's GGUF made an HF folder, widened, checked and saved in fp16."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from vinolm.export.gguf import gguf_to_hf
    from vinolm.models import locate_source

    source = locate_source(str(shape.widens))
    with tempfile.TemporaryDirectory(prefix="vinolm-widen-") as scratch:
        small_dir = gguf_to_hf(Path(source.location), Path(scratch))
        small = AutoModelForCausalLM.from_pretrained(small_dir, dtype=torch.float32)
        big = widen(small, shape.config)
        ids = AutoTokenizer.from_pretrained(small_dir)("The river runs past the mill.", return_tensors="pt").input_ids
        with torch.no_grad():
            gap = (small(ids).logits - big(ids).logits).abs().max().item()
        if gap > 1e-3:
            raise RuntimeError(f"the widened model's logits differ from {shape.widens}'s by {gap:.2g}")
        big.to(torch.float16).save_pretrained(folder, safe_serialization=True)
        AutoTokenizer.from_pretrained(small_dir).save_pretrained(folder)
        if (Path(small_dir) / "generation_config.json").is_file():  # its BOS/EOS, which gguf_to_hf set
            shutil.copy(Path(small_dir) / "generation_config.json", folder / "generation_config.json")


def widen(small: Any, widths: dict[str, Any]) -> Any:
    """A Llama model with ``widths`` that computes what ``small`` computes.

    Every weight goes into the top-left corner of its wider matrix and the rest is zero, so
    the extra hidden dimensions of the residual stream stay zero, the extra query heads
    attend to zero values, and the extra MLP units output zero. Only RMSNorm sees the
    width: it averages over all dimensions, so its weights are scaled by sqrt(h/H) and its
    epsilon by h/H to normalise exactly as before. Query heads keep their KV head because
    the grouping (query heads per KV head) must stay the same.
    """
    import torch
    from transformers import AutoModelForCausalLM

    cfg = small.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    group = cfg.num_attention_heads // cfg.num_key_value_heads
    wide = {key: widths.get(key, getattr(cfg, key)) for key in
            ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "vocab_size")}
    if cfg.model_type != "llama":
        raise ValueError(f"only Llama models can be widened, not {cfg.model_type}")
    if wide["num_attention_heads"] // wide["num_key_value_heads"] != group:
        raise ValueError(f"the widened model must keep {group} query heads per KV head")
    if wide["hidden_size"] != wide["num_attention_heads"] * head_dim:
        raise ValueError(f"the widened model must keep heads of {head_dim} dimensions")
    if any(wide[key] < getattr(cfg, key) for key in wide) or wide["vocab_size"] != cfg.vocab_size:
        raise ValueError("a widened model has at least the model's widths and its vocabulary")
    share = cfg.hidden_size / wide["hidden_size"]
    config = type(cfg).from_dict({**cfg.to_dict(), **wide, "head_dim": head_dim, "rms_norm_eps": cfg.rms_norm_eps * share})
    big = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = big.state_dict()
    with torch.no_grad():
        for key, weight in small.state_dict().items():
            target = torch.zeros_like(state[key])
            corner = tuple(slice(0, n) for n in weight.shape)
            target[corner] = weight * math.sqrt(share) if key.endswith("norm.weight") else weight
            state[key].copy_(target)
    big.eval()
    return big


def build(name: str, formats: tuple[str, ...] = FORMATS) -> dict[str, Path]:
    """Exported IR folders of shape ``name`` per format, building what is missing."""
    from vinolm.catalog import resolve
    from vinolm.export import ExportOptions, export_model

    shape = SHAPES[name]
    root = shape_root(name)
    hf = build_hf(shape, root / "hf")
    folders: dict[str, Path] = {}
    for fmt in formats:
        # What ``vinolm prepare`` makes of the catalog model on this CPU: its layout, then the preset.
        result = export_model(str(hf), root / fmt, ExportOptions(weight_format=fmt), source_kind="hf",
                              preset=resolve(shape.preset_model).int4, progress=_log)
        folders[fmt] = result.path
        gc.collect()
    return folders


def built(name: str) -> dict[str, Path]:
    """The formats of shape ``name`` that are already exported (nothing is built)."""
    from vinolm.export import is_complete

    root = shape_root(name)
    return {fmt: root / fmt for fmt in WEIGHT_FORMATS if is_complete(root / fmt)}


def size_table(name: str) -> str:
    folders = built(name)
    return SizeReport([(fmt, folder_weight_bytes(path)) for fmt, path in folders.items()]).table()


def _log(message: str) -> None:
    print(f"[shapes] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vinolm.bench.shapes", description=__doc__.splitlines()[0])
    p.add_argument("--shape", action="append", choices=sorted(SHAPES), help="default: all")
    p.add_argument("--format", action="append", choices=WEIGHT_FORMATS, help="default: fp16, int8, int4")
    args = p.parse_args(argv)
    out: dict[str, Any] = {}
    for name in args.shape or list(SHAPES):
        folders = build(name, tuple(args.format or FORMATS))
        out[name] = {
            fmt: {"path": str(path), "weight_bytes": folder_weight_bytes(path)}
            for fmt, path in folders.items()
        }
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
