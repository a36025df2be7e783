"""Calibration text for data-aware compression (AWQ), from a local file or a named data set.

Named data sets come from the Hugging Face hub; offline they cannot be had, and we
say so before NNCF spends minutes failing.
"""

from __future__ import annotations

import json
from pathlib import Path

from vinolm.errors import ExportError, InvalidRequest


def load_calibration(dataset: str, num_samples: int | None) -> list[str] | str:
    """Texts from a .txt (one sample per non-empty line) or .jsonl ("text" field) file,
    or a data set name NNCF knows, checked to be available."""
    path = Path(dataset)
    if path.suffix in {".txt", ".jsonl", ".json"} or path.exists():
        texts = _read_texts(path)
        return texts[:num_samples] if num_samples else texts
    _check_named_dataset_available(dataset)
    return dataset


def _read_texts(path: Path) -> list[str]:
    if not path.is_file():
        raise InvalidRequest(f"calibration file {path} does not exist")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix == ".jsonl":
        try:
            lines = [json.loads(line)["text"] for line in lines]
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidRequest(f"{path}: every line must be a JSON object with a 'text' field") from exc
    if not lines:
        raise InvalidRequest(f"calibration file {path} holds no text")
    return lines


def _check_named_dataset_available(name: str) -> None:
    try:
        import datasets  # noqa: F401
    except ImportError as exc:
        raise ExportError(
            f"the calibration set {name!r} must be downloaded with the 'datasets' package, which "
            "is not installed; pass a local text file instead: --dataset FILE.txt"
        ) from exc
    from huggingface_hub import HfApi

    try:
        HfApi().dataset_info({"wikitext2": "wikitext"}.get(name, name), timeout=10)
    except Exception as exc:
        raise ExportError(
            f"the calibration set {name!r} cannot be had offline ({type(exc).__name__}); "
            "pass a local text file instead: --dataset FILE.txt"
        ) from exc
