"""How an embedding model turns its last hidden states into one vector, decided at export.

A sentence-transformers folder says it in its own files (``modules.json``, the pooling
module's ``config.json``, ``sentence_bert_config.json``); the catalog says it for the models
it lists; a bare encoder gets mean pooling with L2 normalisation, which is what
sentence-transformers itself builds around an encoder that has no pooling config. The result
is recorded in ``vinolm.json`` so every engine and server pools the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

POOLINGS = ("mean", "cls", "last")
_ST_MODES = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_lasttoken": "last"}


def embedding_info(source: Path, catalog_name: str | None = None) -> dict[str, Any]:
    """Pooling, normalisation, width, length and prefixes of the model in ``source``."""
    config = _read(source / "config.json")
    info: dict[str, Any] = {
        "pooling": "mean",
        "normalize": True,
        "dimensions": int(config.get("hidden_size") or 0),
        "max_length": int(config.get("max_position_embeddings") or 512),
        "query_prefix": "",
        "document_prefix": "",
    }
    info.update(_sentence_transformers(source))
    if catalog_name is not None:
        from vinolm.catalog import find_embedding

        entry = find_embedding(catalog_name)
        if entry is not None:
            info.update(pooling=entry.pooling, normalize=entry.normalize, query_prefix=entry.query_prefix,
                        document_prefix=entry.document_prefix)
    return info


def _sentence_transformers(folder: Path) -> dict[str, Any]:
    modules = _read(folder / "modules.json", default=[])
    if not isinstance(modules, list) or not modules:
        return {}
    found: dict[str, Any] = {"normalize": any(str(m.get("type", "")).endswith(".Normalize") for m in modules)}
    for module in modules:
        if str(module.get("type", "")).endswith(".Pooling"):
            pooling = _read(folder / str(module.get("path", "")) / "config.json")
            mode = next((name for key, name in _ST_MODES.items() if pooling.get(key)), None)
            if mode is not None:
                found["pooling"] = mode
            if pooling.get("word_embedding_dimension"):
                found["dimensions"] = int(pooling["word_embedding_dimension"])
    length = _read(folder / "sentence_bert_config.json").get("max_seq_length")
    if length:
        found["max_length"] = int(length)
    return found


def _read(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {} if default is None else default
