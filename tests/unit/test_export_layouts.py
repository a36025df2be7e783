"""Weight layouts per CPU kind: the table wins over the catalog preset, the user over both,
and an export's record says what it was made for."""

from __future__ import annotations

from pathlib import Path

import pytest

from vinolm.catalog import Int4Preset
from vinolm.cpu import ISA_CAP_ENV, cpu_kind
from vinolm.errors import EngineError, InvalidRequest
from vinolm.export import EMBEDDING_TASK, GENERATION_TASK, ExportOptions, _settings, describe
from vinolm.export.layouts import DEFAULT_FORMATS, LAYOUTS, TARGETS, layout_for, target_kind
from vinolm.export.report import adjusted_groups, weight_layouts
from vinolm.kernels import extensions_for, missing_cpu_features
from vinolm.models import DEFAULT_MODEL, default_weight_format, locate_source

PRESET = Int4Preset(sym=False, group_size=128, ratio=0.8)
KINDS = [t for t in TARGETS if t not in ("auto", "any")]


def test_every_layout_row_names_a_kind_a_format_and_where_it_was_measured() -> None:
    assert LAYOUTS, "no CPU kind has a measured layout"
    for (kind, fmt), layout in LAYOUTS.items():
        assert kind in KINDS and fmt in ("int8", "int4", "q4_1")
        assert layout.measured, (kind, fmt)
        if fmt == "int8":  # int8 is per channel: only the symmetry is a choice
            assert (layout.group_size, layout.ratio, layout.widest_activation_group) == (None, None, None)
        if fmt == "q4_1":  # llama.cpp's blocks: only the fusion is a choice
            assert (layout.sym, layout.group_size, layout.ratio, layout.widest_activation_group) == (None,) * 4
        if (group := layout.widest_activation_group) is not None:
            assert group % 16 == 0, "OpenVINO quantizes activations in groups of a multiple of 16 or not at all"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fmt", ["int8", "int4"])
def test_the_target_kinds_layout_comes_before_the_preset(kind: str, fmt: str) -> None:
    chosen = ExportOptions(weight_format=fmt, target_cpu=kind).with_defaults(PRESET)
    layout = layout_for(kind, fmt)
    names = ("sym", "group_size", "ratio") if fmt == "int4" else ("sym",)
    for name in names:
        from_layout = getattr(layout, name) if layout is not None else None
        if from_layout is not None:
            assert (getattr(chosen, name), chosen.settings_from[name]) == (from_layout, "cpu")
        elif fmt == "int4":
            assert (getattr(chosen, name), chosen.settings_from[name]) == (getattr(PRESET, name), "catalog")
        else:  # int8 has no preset: NNCF's default, asymmetric
            assert (chosen.sym, chosen.settings_from[name]) == (False, "default")
    fuse = getattr(layout, "fuse", None)
    assert (chosen.fuse, chosen.settings_from["fuse"]) == ((fuse, "cpu") if fuse is not None else (False, "default"))
    record = chosen.compression()
    assert record["target_cpu"] == kind and record["settings_from"] == chosen.settings_from
    assert record["fuse"] is chosen.fuse


def test_the_user_wins_and_any_means_no_layout() -> None:
    for kind in KINDS:
        mine = ExportOptions(weight_format="int4", sym=False, group_size=64, ratio=0.5, target_cpu=kind, fuse=False)
        filled = mine.with_defaults(PRESET)
        assert (filled.sym, filled.group_size, filled.ratio, filled.fuse) == (False, 64, 0.5, False)
        assert set(filled.settings_from.values()) == {"user"}
    portable = ExportOptions(weight_format="int4", target_cpu="any").with_defaults(PRESET)
    assert portable.settings_from.pop("fuse") == "default" and portable.fuse is False
    assert set(portable.settings_from.values()) == {"catalog"}
    assert portable.compression()["target_cpu"] == "any"
    assert target_kind("auto") == cpu_kind()
    hf_folder = ExportOptions(weight_format="int4", target_cpu="any").with_defaults(None)
    assert (hf_folder.sym, hf_folder.group_size, hf_folder.ratio) == (False, 128, 1.0)
    assert set(hf_folder.settings_from.values()) == {"default"}


def test_fusion_follows_the_target_kind_and_never_reaches_embedding_models() -> None:
    assert any(layout.fuse for layout in LAYOUTS.values()), "no kind fuses: export.fuse is dead code"
    for kind in KINDS:
        forced = ExportOptions(weight_format="int8", target_cpu=kind, fuse=True).with_defaults(None)
        assert (forced.fuse, forced.settings_from["fuse"]) == (True, "user")
    fused = next(kind for (kind, fmt), layout in LAYOUTS.items() if fmt == "int8" and layout.fuse)
    options = ExportOptions(weight_format="int8", target_cpu=fused).with_defaults(None)
    assert options.for_task(GENERATION_TASK) is options
    embedding = options.for_task(EMBEDDING_TASK)
    assert (embedding.fuse, embedding.settings_from["fuse"]) == (False, "task")
    with pytest.raises(InvalidRequest, match="--fuse applies to text-generation models"):
        ExportOptions(weight_format="int8", fuse=True).with_defaults(None).for_task(EMBEDDING_TASK)
    with pytest.raises(InvalidRequest, match="--fuse/--no-fuse apply to int8, int4 and q4_1"):
        ExportOptions(weight_format="fp16", fuse=False).validated()
    with pytest.raises(InvalidRequest, match="q4_1 weight format applies to text-generation models"):
        ExportOptions(weight_format="q4_1").with_defaults(None).for_task(EMBEDDING_TASK)


def test_a_fused_export_is_not_taken_for_an_unfused_one() -> None:
    assert describe({"weight_format": "int8", "sym": True, "fuse": True}) == "int8 sym fused"
    assert describe({"weight_format": "int8", "sym": True}) == "int8 sym"  # records before fusion
    assert _settings({"weight_format": "int8", "sym": True}) != _settings({"weight_format": "int8", "sym": True,
                                                                          "fuse": True})


def test_a_q4_1_export_in_an_older_kernel_layout_is_made_again() -> None:
    """Exports from before the kernel's layout was recorded (4-bit output layer, scales in row order) have none;
    layout 2 kept each row's Q4_1 nibbles together, where 3 interleaves the rows by four elements, 3 ran
    a gated MLP as five nodes, where 4 fuses it into one, and 4 gave that one its blocks as inputs, where
    5 holds them in its body."""
    now = ExportOptions(weight_format="q4_1").with_defaults(None).compression()
    assert describe(now).startswith("q4_1 layout 5")
    for old in ({}, {"kernel_layout": 2}, {"kernel_layout": 3}, {"kernel_layout": 4}):
        assert _settings({"weight_format": "q4_1", "fuse": now["fuse"], **old}) != _settings(now)
        with pytest.raises(EngineError, match="made by an older vinolm.*export it again"):
            extensions_for({"weight_format": "q4_1", "fuse": True, **old})


def test_bad_targets_and_settings_are_refused_by_name() -> None:
    with pytest.raises(InvalidRequest, match="unknown target CPU 'avx1024'"):
        ExportOptions(weight_format="int4", target_cpu="avx1024").validated()
    with pytest.raises(InvalidRequest, match="not fp16"):
        ExportOptions(weight_format="fp16", sym=True).validated()


def test_describe_reads_new_and_old_records() -> None:
    assert describe({"weight_format": "int4", "sym": True, "group_size": 128, "ratio": 1.0, "awq": False}) == \
        "int4 sym g128 r1.0"
    assert describe({"weight_format": "int4", "sym": False, "group_size": -1, "ratio": 0.8, "awq": True}) == \
        "int4 asym channel-wise r0.8 awq"
    assert describe({"weight_format": "int8"}) == "int8 asym"  # before int8 records had sym: asymmetric
    assert describe({"weight_format": "fp16"}) == "fp16"
    assert describe({"weight_format": "int4", "sym": False, "group_size": None, "ratio": None}) == "int4 asym"


def test_the_record_counts_the_layouts_nncf_wrote(tmp_path: Path) -> None:
    """Grouped weights are [out, groups, group], channel-wise ones [out, in]; zero points
    ([..., 1]) and float constants are no weights."""
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    def const(kind: ov.Type, shape: list[int]) -> ov.Node:
        return ops.convert(ops.constant(np.zeros(shape, np.int8), dtype=kind), "f32")

    parts = [const(ov.Type.i4, [8, 2, 64]), const(ov.Type.i4, [8, 2, 64]), const(ov.Type.u4, [8, 1, 128]),
             const(ov.Type.u4, [8, 1, 1]), const(ov.Type.u4, [8, 128]), const(ov.Type.u8, [8, 128]),
             const(ov.Type.u8, [8, 1]), ops.constant(np.zeros([8, 128], np.float32))]
    ov.save_model(ov.Model([ops.result(p) for p in parts], []), tmp_path / "m.xml")
    layouts = weight_layouts(tmp_path / "m.xml")
    assert layouts == {"int4 g64": 2, "int4 channel-wise": 1, "int4 g128": 1, "int8 channel-wise": 1}
    assert adjusted_groups(layouts, 128) == {"int4 g64": 2, "int4 channel-wise": 1}
    assert adjusted_groups(layouts, -1) == {"int4 g64": 2, "int4 g128": 1}


def test_int4_exports_take_activation_groups_as_wide_as_their_weights_allow() -> None:
    from vinolm.export.layouts import activation_group

    cw = {"weight_format": "int4", "layers": {"int4 channel-wise": 210, "int8 channel-wise": 1}}
    assert activation_group("avx512-bf16", cw) == 256 and activation_group("avx512", cw) == 256
    assert activation_group("avx2-vnni", cw) == 256  # AVX-VNNI's int8 dot products, as AVX-512's
    assert activation_group("amx", cw) == 128  # the widest measured there
    assert activation_group("other", cw) is None  # no row for that kind
    assert activation_group("avx2", cw) is None  # no int8 dot products: no activation groups at all
    g128 = {"weight_format": "int4", "layers": {"int4 g128": 139, "int8 channel-wise": 72}}
    assert activation_group("avx512-bf16", g128) == 128 and activation_group("avx2-vnni", g128) == 128
    # NNCF narrowed some layers' groups: the narrowest decides (OpenVINO would stop quantizing there).
    narrowed = {"weight_format": "int4", "layers": {"int4 g64": 109, "int8 channel-wise": 72, "int4 g256": 30}}
    assert activation_group("avx512-bf16", narrowed) == 64
    int8 = {"weight_format": "int8", "layers": {"int8 channel-wise": 211}}  # its own error is small: keep 64
    for info in (int8, {"weight_format": "int4"}, {}):
        assert activation_group("avx512-bf16", info) is None


def test_prepares_default_is_the_kinds_fastest_format_and_int8_without_a_compiler(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default model (a GGUF) takes q4_1 where OpenVINO's kernels are capped at AVX2 (so on any x86
    CPU of the last decade), INT8 capped below; without a compiler INT8, with the reason said."""
    if missing_cpu_features():
        pytest.skip("the q4_1 kernel needs AVX2, FMA and F16C")
    gguf, embedding = locate_source(DEFAULT_MODEL), locate_source("all-minilm-l6-v2")
    assert gguf.kind == "gguf"
    monkeypatch.setenv(ISA_CAP_ENV, "AVX2")
    assert cpu_kind() == "avx2" and DEFAULT_FORMATS["avx2"] == "q4_1"
    assert default_weight_format(gguf) == "q4_1"
    assert default_weight_format(embedding) == "int8"  # q4_1 is for text generation
    monkeypatch.setenv(ISA_CAP_ENV, "AVX")
    assert default_weight_format(gguf) == "int8"
    monkeypatch.setenv(ISA_CAP_ENV, "AVX2")
    monkeypatch.setenv("VINOLM_HOME", str(tmp_path))
    monkeypatch.setenv("CXX", "no-such-compiler")
    said: list[str] = []
    assert default_weight_format(gguf, said.append) == "int8"
    assert said == [("int8 weights, not this CPU's faster q4_1: the q4_1 weight format's kernel is compiled on "
                     "first use and needs a C++ compiler (no-such-compiler was not found): install one (apt install "
                     "g++) or set CXX")]
