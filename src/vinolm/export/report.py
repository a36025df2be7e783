"""Sizes of exported folders and their compression rate against FP16, as the tutorials print,
and the weight layouts an export really holds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: Element types of NNCF's compressed weights.
_BITS = {"u4": "int4", "i4": "int4", "u8": "int8", "i8": "int8"}


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


def weight_layouts(xml: Path) -> dict[str, int]:
    """How many weight matrices the IR holds per layout (``int4 g64``, ``int8 channel-wise``).

    The settings asked for are not always what NNCF wrote: where a group size does not divide
    a layer's inputs (576 by 128), NNCF adjusts that layer's group, so only the constants tell.
    Grouped weights are [out, groups, group]; zero points ([..., 1]) are not weights.
    """
    import openvino as ov

    counts: dict[str, int] = {}
    for op in ov.Core().read_model(xml).get_ordered_ops():
        if op.get_type_name() != "Constant" or (bits := _BITS.get(op.get_element_type().get_type_name())) is None:
            continue
        shape = list(op.get_output_partial_shape(0).to_shape())
        if len(shape) < 2 or shape[-1] == 1:
            continue
        name = f"{bits} g{shape[-1]}" if len(shape) == 3 else f"{bits} channel-wise"
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def adjusted_groups(layouts: dict[str, int], group_size: int | None) -> dict[str, int]:
    """The INT4 layouts of ``weight_layouts`` other than the group size asked for."""
    asked = "int4 channel-wise" if group_size == -1 else f"int4 g{group_size}"
    return {name: n for name, n in layouts.items() if name.startswith("int4") and name != asked}
