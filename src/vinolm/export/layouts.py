"""Weight layouts per CPU kind: the compression settings whose kernels decode fastest there.

OpenVINO decompresses INT4 and INT8 weights with a different kernel per ISA, and a layout
that is fastest on one kind of CPU can be slow on another: symmetric INT4 decoded a 1.1B
model 1.29x faster than the asymmetric preset on an AVX2-only AMD EPYC (Zen 3) and
1.01-1.08x on AVX-512 ones; groups of 32 halved prefill with AVX-512 (docs/benchmarks.md,
sections 11 and 16). An export is made for one kind of CPU, this machine's unless
``--target-cpu`` names another (the machine it will be served on), and ``vinolm.json``
records which kind and where every setting came from.

Precedence, setting by setting: what the user gives, then this table (speed where the model
runs), then the catalog's tutorial preset (chosen for quality), then NNCF's defaults; fused
q/k/v projections (``export.fuse``) only where a row asks for them. The table only has rows
measured with that kind's kernels; a kind without one keeps the preset, unfused. A row
may also name a compile property for an export of that layout (``activation_group``), which
the engines apply when they load it on that kind of CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vinolm.cpu import cpu_kind

#: ``--target-cpu`` values: a kind of CPU, ``auto`` (this machine) or ``any`` (no layout:
#: the preset alone, for an export that must not favour one kind).
TARGETS = ("auto", "amx", "avx512-bf16", "avx512", "avx2-vnni", "avx2", "any")


@dataclass(frozen=True)
class Layout:
    """Settings a kind of CPU decodes fastest with; None leaves the setting to the preset."""

    sym: bool | None = None
    group_size: int | None = None
    ratio: float | None = None
    #: One matmul for the q/k/v projections (``export.fuse``).
    fuse: bool | None = None
    #: The widest activation groups for the int8 dot products (OpenVINO's
    #: ``DYNAMIC_QUANTIZATION_GROUP_SIZE``) an INT4 export of this kind compiles with: a
    #: compile property, not an export setting (``activation_group``).
    widest_activation_group: int | None = None
    #: The measurement behind the row (machine, date, numbers): a row without one is a guess.
    measured: str = ""


#: Fused q/k/v (``export.fuse``) against the same export unfused: one process, each row twice,
#: time per token (docs/benchmarks.md section 14).
_FUSED_ZEN4 = ("AMD EPYC Zen 4, 2026-12-04: fused q/k/v take 0.90-0.98x the time per token of the unfused "
               "export at 135M INT8 (0.944x over 15 runs), 0.985x INT4; 1.1B 0.968x INT4, 0.981x INT8; prefill level")
_FUSED_AVX512 = "Zen 4 capped at AVX512_CORE_VNNI, 2026-12-04: fused q/k/v 0.912x the time per token at 135M INT8"
#: Activation groups as wide as the INT4 weights' own (up to 256) against vinolm's 64, one process
#: (docs/benchmarks.md section 15). Not for INT8: there the coarser activations double the
#: divergence from FP16 at 135M (KL 0.012 -> 0.026 with groups of 256).
_WIDE_GROUPS_ZEN4 = ("AMD EPYC Zen 4, 2026-12-04, 1.1B shape: channel-wise INT4 with activation groups of 256 "
                     "0.87-0.92x the time per token of groups of 64 (four runs), prefill 1.17-1.2x; groups of 256 "
                     "weights 0.91x, prefill 1.18x; groups of 128 (the layout) decode level, prefill 1.11-1.18x. "
                     "At 135M channel-wise INT4's KL divergence from FP16 moves 0.730 -> 0.740 (256), 0.730 (128)")
_WIDE_GROUPS_AVX512 = ("Zen 4 capped at AVX512_CORE_VNNI, 2026-12-04: activation groups of 256 on the 1.1B "
                       "shape's channel-wise INT4 0.86x the time per token of groups of 64, prefill 1.2x; groups of "
                       "128 on the g128 layout decode level, prefill 1.11-1.12x")
#: The first real AVX2-only machine since issue 16 (docs/benchmarks.md section 16).
_SYM_ZEN3 = ("AMD EPYC Zen 3 (AVX2 only), 2026-12-05, 1.1B shape, one process, 5 runs twice: symmetric INT4 at "
             "the preset's group 128 and ratio 0.8 took 0.767-0.780x the time per token of groups of 32 (19.4-19.7 "
             "vs 15.1 tok/s) and the asymmetric preset 1.008-1.031x (15.0); channel-wise at ratio 1.0 0.687-0.701x "
             "(opt-in: its quality cost); at 135M all INT4 layouts within 4% of INT8 (990-token prompts).")
_FUSED_AVX2 = ("Zen 4 capped at AVX2, 2026-12-04: fused q/k/v 0.891x the time per token at 135M INT8, "
               "0.996x at 1.1B INT8; prefill level")

#: AVX-VNNI without AVX-512 (Intel client CPUs), rehearsed on an AMX Xeon with OpenVINO's kernels
#: capped at ``AVX2_VNNI`` and f32 math (docs/benchmarks.md section 19).
_VNNI_XEON = ("Intel Xeon (AMX) capped at AVX2_VNNI, 2026-12-06, 1.1B shape, one process, 5 runs: activation "
              "groups of 64 decode 1.9x faster than none (the f32 math of AVX2 alone), at 135M 1.7x; symmetric "
              "fused INT4 at the preset's group 128 and ratio 0.8 0.978x the time per token of the asymmetric "
              "preset, 0.925x with activation groups of 128 (prefill 1.10x); groups of 32 2.07x (slow, as with "
              "AVX-512); channel-wise at ratio 1.0 with groups of 256 0.786x (opt-in: its quality cost)")
#: "capped" rows were measured on an AVX-512 machine with OpenVINO's kernels held to the
#: older ISA by oneDNN's ``ONEDNN_MAX_CPU_ISA`` (docs/benchmarks.md section 12): the kernels
#: of that kind on this machine's memory. The capped AVX2 run reproduced issue 16's Zen 3
#: ratios (sym g32 r1.0 1.27x vs 1.25x the preset, INT8 sym 1.11x vs 1.14x) but not the group
#: size's: on a real Zen 3 (2026-12-05) groups of 32 cost 1.28x the time of groups of 128.
#: The first AMX machine measured for layouts (docs/benchmarks.md section 18): one process, 1.1B shape,
#: 256-token prompts, 5 runs, twice.
_AMX_XEON = ("Intel Xeon with AMX, 2026-12-06, 1.1B shape, one process, 5 runs, twice: symmetric INT4 at the "
             "preset's group 128 and ratio 0.8, fused, took 0.886x and 0.897x the time per token of the asymmetric "
             "preset (38.9 vs 34.5 tok/s; the preset's twin 1.012x), unfused 0.916x; activation groups of 128 "
             "decode level and prefill 1.18x (521 vs 440 tok/s); channel-wise 0.965x")
_AMX_XEON_INT8 = ("Intel Xeon with AMX, 2026-12-06, 1.1B shape, one process, 5 runs: symmetric INT8 fused took "
                  "0.943x the time per token of the asymmetric preset (26.8 vs 25.3 tok/s), unfused 0.965x; "
                  "0.967x fused in a second run; at 135M (the default model, 990-token prompts, 7 runs, each twice) "
                  "0.946x, prefill level. Symmetric INT8 costs no quality at 135M (KL 0.0044 vs 0.0041, the avx2 row)")

LAYOUTS: dict[tuple[str, str], Layout] = {
    ("amx", "int4"): Layout(sym=True, fuse=True, widest_activation_group=128, measured=_AMX_XEON),
    ("amx", "int8"): Layout(sym=True, fuse=True, measured=_AMX_XEON_INT8),
    ("avx512-bf16", "int4"): Layout(
        sym=True, fuse=True, widest_activation_group=256,
        measured="AMD EPYC Zen 5, 2026-12-03: symmetric INT4 decodes SmolLM2-135M 1.10x faster than "
                 "asymmetric at the preset's group and ratio (120.2 vs 109.5 tok/s), 1.1B level (38.6 vs 38.2), "
                 "quality level (KL divergence from FP16 0.213 vs 0.208). AMD EPYC Zen 4, 2026-12-04: the asymmetric "
                 "preset takes 1.03-1.04x the time per token at 1.1B (each row twice, 7 runs), 135M 86.6 vs 84.2 tok/s. "
                 + _FUSED_ZEN4 + ". " + _WIDE_GROUPS_ZEN4,
    ),
    ("avx512-bf16", "int8"): Layout(fuse=True, measured=_FUSED_ZEN4),
    ("avx512", "int4"): Layout(
        sym=True, fuse=True, widest_activation_group=256,
        measured="AMD EPYC Zen 5 capped at AVX512_CORE_VNNI (f32 math, as without BF16), 2026-12-03: symmetric "
                 "INT4 at the preset's group and ratio 1.07x the preset at 135M (100.8 vs 94.4 tok/s), 1.08x at "
                 "1.1B (40.9 vs 37.9); groups of 32 halve prefill there (215 vs 466 tok/s at 1.1B). " + _FUSED_AVX512
                 + ". " + _WIDE_GROUPS_AVX512,
    ),
    ("avx512", "int8"): Layout(fuse=True, measured=_FUSED_AVX512),
    ("avx2-vnni", "int4"): Layout(sym=True, fuse=True, widest_activation_group=256, measured=_VNNI_XEON),
    ("avx2-vnni", "int8"): Layout(
        sym=True, fuse=True,
        measured="Intel Xeon (AMX) capped at AVX2_VNNI, 2026-12-06, one process: at 135M (990-token prompts, 7 "
                 "runs) symmetric fused INT8 1.13x the asymmetric unfused preset's decode (per-run medians; 1.06x "
                 "in another run), asymmetric fused 1.09x, symmetric unfused 1.06x; at 1.1B symmetric fused 0.99x, "
                 "asymmetric fused 1.01x (5 runs). Symmetric, as on AVX2: with asymmetric fused INT8 the default "
                 "model lost a ten-turn chat's secret word and looped in a JSON object under vinolm's defaults "
                 "(the test suite under the cap), which the symmetric export kept",
    ),
    ("avx2", "int4"): Layout(
        sym=True, fuse=True,
        measured=_SYM_ZEN3 + " Groups of 32 (this row's choice until then, from issue 16's Zen 3, which set it "
                 "against the asymmetric preset, and from Zen 5 capped at AVX2, where 32 and 128 were level) took "
                 "1.28x the time per token of symmetric groups of 128 at 1.1B on the real Zen 3, and 1.03x at 135M. "
                 + _FUSED_AVX2,
    ),
    ("avx2", "q4_1"): Layout(
        fuse=True,
        measured="AMD EPYC Zen 3 (AVX2 only), 2026-12-07, the default model, the genai engine, one process, 7 "
                 "runs alternating: fused q4_1 decoded 1.21x (990-token prompts) and 1.20x (32) the fused INT8 "
                 "export's speed, prefill 0.82x and 0.81x; fused as INT8 is on this kind (docs/benchmarks.md "
                 "section 31). " + _FUSED_AVX2,
    ),
    ("avx2", "int8"): Layout(
        sym=True, fuse=True,
        measured="AMD EPYC Zen 3 (issue 16): symmetric INT8 decoded the 1.1B shape 1.14x faster than "
                 "asymmetric (11.9 vs 10.4 tok/s); Zen 5 capped at AVX2: 1.11x (25.1 vs 22.7), 1.02x at 135M; "
                 "at 135M it costs no quality (KL 0.0044 vs 0.0041). " + _FUSED_AVX2,
    ),
}


#: ``prepare``'s weight format, per kind of CPU, for a model with no INT4 preset of the catalog's (the
#: default model, any GGUF file) where one decodes faster than INT8 at INT8's quality or better; INT8 on
#: every other kind. AMD EPYC Zen 3 (AVX2 only), 2026-12-07: q4_1 decoded the default model 1.17-1.29x the
#: fused INT8 export's speed in genai, one process, with a KL divergence from FP16 of 0.0036 against INT8's
#: 0.0044 (docs/benchmarks.md sections 32 and 33). Elsewhere OpenVINO's own integer kernels run INT8.
DEFAULT_FORMATS: dict[str, str] = {"avx2": "q4_1"}


def target_kind(target: str) -> str:
    """The kind of CPU an export is made for."""
    return cpu_kind() if target == "auto" else target


def layout_for(target: str, weight_format: str) -> Layout | None:
    return LAYOUTS.get((target_kind(target), weight_format))


def describe_layout(target: str, weight_format: str) -> str:
    """The layout an export for ``target`` gets, in words (``vinolm devices``)."""
    layout = layout_for(target, weight_format)
    if layout is None:
        return f"the catalog's preset (no layout measured for {target_kind(target)} CPUs)"
    parts = [] if layout.sym is None else ["symmetric" if layout.sym else "asymmetric"]
    parts += [f"{name.replace('_', ' ')} {value}" for name in ("group_size", "ratio")
              if (value := getattr(layout, name)) is not None]  # fmt: skip
    parts += [] if layout.fuse is None else ["fused q/k/v" if layout.fuse else "q/k/v unfused"]
    if layout.widest_activation_group:
        parts.append(f"activation groups up to {layout.widest_activation_group}")
    return ", ".join(parts) + ", the rest as the catalog's preset"


def activation_group(kind: str, info: dict[str, Any]) -> int | None:
    """The activation groups an INT4 export (its ``vinolm.json``) decodes and prefills
    fastest with on ``kind``: as wide as its narrowest weight group (``layers``: NNCF may
    have narrowed some) up to the kind's widest. OpenVINO allows no wider: beyond the
    weight group it stops quantizing activations, which halves prefill. None where the kind
    has no measurement, and for INT8, whose own error is small enough for coarser
    activations to double it."""
    layout = LAYOUTS.get((kind, "int4"))
    layers = info.get("layers") or {}
    if info.get("weight_format") != "int4" or not layers or layout is None or not layout.widest_activation_group:
        return None
    groups = [int(name.rpartition(" g")[2]) for name in layers if not name.endswith("channel-wise")]
    return min([*groups, layout.widest_activation_group])
