"""Sizes of exported folders and their compression rate against FP16, as the tutorials print."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


def folder_weight_bytes(folder: Path) -> int:
    """Bytes of the model weights (the IR's .bin), tokenizers excluded."""
    return sum(p.stat().st_size for p in Path(folder).glob("openvino_model*.bin"))


@dataclass
class SizeReport:
    rows: list[tuple[str, int]]  # (weight format, bytes)

    def table(self) -> str:
        fp16 = dict(self.rows).get("fp16")
        lines = ["| weights | size (MB) | compression vs fp16 |", "|---|---:|---:|"]
        for fmt, size in self.rows:
            rate = f"{fp16 / size:.2f}x" if fp16 and size else "-"
            lines.append(f"| {fmt} | {size / 2**20:.1f} | {rate} |")
        return "\n".join(lines)
