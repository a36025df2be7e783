"""Weight layouts per CPU kind: the compression settings whose kernels decode fastest there.

OpenVINO decompresses INT4 and INT8 weights with a different kernel per ISA, and a layout
that is fastest on one kind of CPU is slowest on another: INT4 in groups of 32 decoded a
1.1B model 1.25x faster than groups of 128 on an AVX2-only AMD EPYC and 1.6x slower on an
AVX-512 one (docs/benchmarks.md, section 11). An export is made for one kind of CPU, this
machine's unless ``--target-cpu`` names another (the machine it will be served on), and
``vinolm.json`` records which kind and where every setting came from.

Precedence, setting by setting: what the user gives, then this table (speed where the model
runs), then the catalog's tutorial preset (chosen for quality), then NNCF's defaults. The
table only has rows measured on that kind; a kind without one keeps the preset.
"""

from __future__ import annotations

from dataclasses import dataclass

from vinolm.cpu import cpu_kind

#: ``--target-cpu`` values: a kind of CPU, ``auto`` (this machine) or ``any`` (no layout:
#: the preset alone, for an export that must not favour one kind).
TARGETS = ("auto", "amx", "avx512-bf16", "avx512", "avx2", "any")


@dataclass(frozen=True)
class Layout:
    """Settings a kind of CPU decodes fastest with; None leaves the setting to the preset."""

    sym: bool | None = None
    group_size: int | None = None
    ratio: float | None = None
    #: The measurement behind the row (machine, date, numbers): a row without one is a guess.
    measured: str = ""


LAYOUTS: dict[tuple[str, str], Layout] = {
    ("avx512-bf16", "int4"): Layout(
        sym=True,
        measured="AMD EPYC Zen 5, 2026-12-03: symmetric INT4 decodes SmolLM2-135M 1.10x faster than "
                 "asymmetric at the preset's group and ratio (120.2 vs 109.5 tok/s), 1.1B level (38.6 vs 38.2), "
                 "quality level (KL divergence from FP16 0.213 vs 0.208)",
    ),
    ("avx2", "int4"): Layout(
        sym=True, group_size=32,
        measured="AMD EPYC Zen 3 (issue 16): INT4 sym group 32 at ratio 1.0 decoded the 1.1B shape 1.25x faster "
                 "than the asym group-128 ratio-0.8 preset (11.6 vs 9.3 tok/s); at the preset's ratio: not measured",
    ),
    ("avx2", "int8"): Layout(
        sym=True,
        measured="AMD EPYC Zen 3 (issue 16): symmetric INT8 decoded the 1.1B shape 1.14x faster than "
                 "asymmetric (11.9 vs 10.4 tok/s); at 135M it costs no quality (KL 0.0044 vs 0.0041)",
    ),
}


def target_kind(target: str) -> str:
    """The kind of CPU an export is made for."""
    return cpu_kind() if target == "auto" else target


def layout_for(target: str, weight_format: str) -> Layout | None:
    return LAYOUTS.get((target_kind(target), weight_format))
