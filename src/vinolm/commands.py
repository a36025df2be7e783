"""Core commands: models, devices, prepare, export, generate."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from vinolm.cliutil import (
    add_generation_args,
    add_model_args,
    engine_from_args,
    params_from_args,
    print_response,
    status,
)
from vinolm.export import WEIGHT_FORMATS
from vinolm.export.layouts import TARGETS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the model catalog and what is prepared locally")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("embed", help="print embedding vectors of texts, one JSON line each")
    p.add_argument("texts", nargs="+", metavar="TEXT")
    p.add_argument("--model", "-m", default="all-minilm-l6-v2",
                   help="an embedding model: catalog name, OpenVINO or HF folder (default: all-minilm-l6-v2)")
    p.add_argument("--device", default="CPU")
    p.add_argument("--dimensions", type=int, default=None, help="keep the first N dimensions (renormalised)")
    p.add_argument("--query", action="store_true", help="embed as search queries (the model's query prefix)")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("devices", help="list OpenVINO devices, and what vinolm does on this CPU")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("prepare", help="export a model into the cache ($VINOLM_HOME) if needed")
    p.add_argument("model", nargs="?", default=None, help="default: smollm2-135m")
    p.add_argument("--weight-format", choices=WEIGHT_FORMATS, default=None)
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("export", help="export a model to an OpenVINO folder with compressed weights")
    p.add_argument("source", help="catalog name, HF folder, .gguf file or hub id")
    p.add_argument("-o", "--output", type=Path, default=None, help="output folder (default: ./<name>-<format>)")
    p.add_argument("--weight-format", choices=WEIGHT_FORMATS, default="int4")
    p.add_argument("--group-size", type=int, default=None, help="int4 group size (catalog preset or 128)")
    p.add_argument("--ratio", type=float, default=None, help="share of int4 layers, the rest int8")
    sym = p.add_mutually_exclusive_group()
    sym.add_argument("--sym", action="store_true", default=None, help="symmetric quantization")
    sym.add_argument("--asym", dest="sym", action="store_false", help="asymmetric quantization (zero points)")
    p.add_argument("--target-cpu", choices=TARGETS, default="auto",
                   help="the kind of CPU to lay the weights out for: auto = this machine's, any = none "
                        "(the catalog preset alone); see docs/benchmarks.md section 11")
    fuse = p.add_mutually_exclusive_group()
    fuse.add_argument("--fuse", action="store_true", default=None,
                      help="one matmul for the projections that share an input (q/k/v); default: where the "
                           "target CPU decodes faster with it, all but AMX (docs/benchmarks.md section 14)")
    fuse.add_argument("--no-fuse", dest="fuse", action="store_false", help="keep every projection its own matmul")
    p.add_argument("--awq", action="store_true", help="data-aware AWQ (needs --dataset)")
    p.add_argument("--dataset", default=None, help="calibration set: a name or a .txt/.jsonl file")
    p.add_argument("--num-samples", type=int, default=None)
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--force", action="store_true", help="export again even if the folder holds a complete export (it is replaced)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "generate", help="answer a prompt, streaming to stdout",
        description="Answer PROMPT in the model's own format: its instruction template where the "
        "catalog has one (Dolly), else one user turn of its chat format; --raw continues the text as is.",
    )
    p.add_argument("prompt")
    add_model_args(p)
    add_generation_args(p)
    form = p.add_mutually_exclusive_group()
    form.add_argument("--raw", action="store_true",
                      help="send the prompt as is, without the model's chat or instruction format")
    form.add_argument("--chat", action="store_true",
                      help="one user turn of the chat format even where the model has an instruction template")
    p.add_argument("--json", action="store_true", help="print one JSON object (text + metrics) at the end")
    p.set_defaults(func=cmd_generate)


def cmd_models(args: argparse.Namespace) -> int:
    from vinolm.catalog import embedding_entries, entries
    from vinolm.models import is_prepared

    rows = [
        {"name": e.name, "hub_id": e.hub_id, "languages": list(e.languages), "prepared": is_prepared(e),  # type: ignore[arg-type]
         "task": task}
        for task, group in (("chat", entries()), ("embedding", embedding_entries())) for e in group
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        prepared = ",".join(r["prepared"]) or "-"
        print(f"{r['name']:<{width}}  {r['task']:<9} {r['hub_id']:<45} {'/'.join(r['languages']):<12} "
              f"prepared: {prepared}")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from vinolm.engines import EngineOptions
    from vinolm.engines.embedding import EmbeddingEngine
    from vinolm.engines.ovconfig import check_device
    from vinolm.models import prepare

    check_device(args.device)
    engine = EmbeddingEngine(prepare(args.model, progress=status), EngineOptions(device=args.device))
    result = engine.embed(args.texts, dimensions=args.dimensions, kind="query" if args.query else "document")
    for text, vector, tokens in zip(args.texts, result.vectors, result.token_counts, strict=True):
        print(json.dumps({"text": text, "tokens": tokens, "embedding": [round(float(x), 6) for x in vector]},
                         ensure_ascii=False))
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    import openvino as ov

    from vinolm.bench.report import isa_line
    from vinolm.engines import compile_cache

    core = ov.Core()
    devices = [{"name": device, "full_name": core.get_property(device, "FULL_DEVICE_NAME"),
                **({"cpu": cpu_choices()} if device == "CPU" else {})} for device in core.available_devices]
    cache = compile_cache.summary()
    if args.json:
        print(json.dumps({"devices": devices, "model_cache": cache}, indent=2))
        return 0
    for device in devices:
        print(f"{device['name']}: {device['full_name']}")
        if cpu := device.get("cpu"):
            bf16, int8 = cpu["math"]["bf16"], cpu["math"]["int8_activations"]
            math = f"bf16 math {'yes' if bf16 else 'no'}, int8 activations (VNNI) {'yes' if int8 else 'no'}"
            print(f"  {isa_line(cpu)}; {math}" + ("" if bf16 or int8 else ": OpenVINO computes in f32"))
            print("  compiled with: " + ", ".join(f"{k}={v}" for k, v in cpu["compile_defaults"].items()))
            for fmt, layout in cpu["layouts"].items():
                print(f"  {fmt} exports made here: {layout}")
            print(f"  a GGUF (the default model) is prepared as {cpu['gguf_weight_format']}"
                  + (", int8 where no C++ compiler builds its kernel" if cpu["gguf_weight_format"] != "int8" else ""))
            print(f"  prompt lookup proposes {cpu['lookup_proposals']} tokens a step, "
                  f"a draft model {cpu['draft_proposals']}")
    print("AUTO: let OpenVINO choose")
    print(_cache_line(cache))
    return 0


def _cache_line(cache: dict[str, Any]) -> str:
    from vinolm.engines import compile_cache

    if cache["folder"] is None:
        return f"model cache: off ({compile_cache.ENV}=0)"
    line = (f"model cache: {cache['folder']}, {cache['bytes'] / 1e6:.0f} MB of "
            f"{cache['cap_bytes'] / compile_cache.GB:g} GB ({compile_cache.ENV})")
    if cache["paged_attention_blobs_rejected"]:
        line += "; genai pipelines compile without it: this OpenVINO cannot import their paged-attention blobs"
    return line


def cpu_choices() -> dict[str, Any]:
    """What vinolm picks on this CPU by its kind and its bf16 and int8 arithmetic
    (docs/benchmarks.md, per section and kind): what a user reads next to a speed they did
    not expect, and a bug report should carry. One read of the flags serves every choice."""
    from vinolm.bench.report import machine
    from vinolm.cpu import BF16_FLAGS, INT8_DOT_FLAGS, cpu_flags, cpu_kind
    from vinolm.engines.base import Speculation
    from vinolm.engines.lookup import proposed_tokens
    from vinolm.engines.ovconfig import device_defaults
    from vinolm.export.layouts import DEFAULT_FORMATS, describe_layout
    from vinolm.models import DEFAULT_WEIGHT_FORMAT

    flags = cpu_flags()
    return {**machine(),
            "math": {"bf16": bool(BF16_FLAGS & flags), "int8_activations": bool(INT8_DOT_FLAGS & flags)},
            "compile_defaults": device_defaults("CPU", flags),
            "layouts": {fmt: describe_layout("auto", fmt) for fmt in ("int4", "int8")},
            "gguf_weight_format": DEFAULT_FORMATS.get(cpu_kind(flags), DEFAULT_WEIGHT_FORMAT),
            "lookup_proposals": proposed_tokens(Speculation(), "CPU", flags),
            "draft_proposals": proposed_tokens(Speculation(draft="draft"), "CPU", flags)}  # fmt: skip


def cmd_prepare(args: argparse.Namespace) -> int:
    from vinolm.models import prepare

    model = prepare(args.model, args.weight_format, progress=status)
    print(model.path)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from vinolm.export import ExportOptions, SizeReport, describe, export_model
    from vinolm.models import locate_source

    source = locate_source(args.source)
    options = ExportOptions(
        weight_format=args.weight_format, group_size=args.group_size, ratio=args.ratio, sym=args.sym,
        awq=args.awq, dataset=args.dataset, num_samples=args.num_samples,
        trust_remote_code=args.trust_remote_code, force=args.force, target_cpu=args.target_cpu, fuse=args.fuse,
    ).validated()
    if source.kind == "ir":
        status(f"{args.source} is already an OpenVINO model; nothing to export")
        return 0
    from vinolm.models import _check_remote_code

    _check_remote_code(source, options)
    output = args.output or Path(f"{source.name.replace('/', '--')}-{options.weight_format}")
    result = export_model(source.location, output, options, source_kind=source.kind,
                          catalog_name=source.entry.name if source.entry else None,
                          preset=getattr(source.entry, "int4", None), progress=status)
    verb = "reused the complete export in" if result.reused else f"exported in {result.seconds:.0f} s to"
    status(f"{verb} {result.path}: {describe(result.info)} weights for {_target(result.info)}")
    print(SizeReport(_sibling_sizes(result.path, options.weight_format)).table())
    return 0


def _target(info: dict[str, Any]) -> str:
    """Which CPU an export's layout is for, and which settings that decided."""
    kind = info.get("target_cpu")
    if kind in (None, "any"):
        return "any CPU"
    chosen = [name for name, origin in info.get("settings_from", {}).items() if origin == "cpu"]
    return f"{kind} CPUs" + (f" ({', '.join(chosen)} chosen for them)" if chosen else "")


def _sibling_sizes(path: Path, weight_format: str) -> list[tuple[str, int]]:
    """This export's size next to its fp16/int8/int4 siblings (``name-fp16`` ...), if present."""
    from vinolm.export import WEIGHT_FORMATS, folder_weight_bytes, is_complete

    stem = path.name[: -len(weight_format)] if path.name.endswith(weight_format) else None
    rows = []
    for fmt in WEIGHT_FORMATS:
        candidate = path if fmt == weight_format else (path.parent / f"{stem}{fmt}" if stem else None)
        if candidate is not None and is_complete(candidate):
            rows.append((fmt, folder_weight_bytes(candidate)))
    return rows


def cmd_generate(args: argparse.Namespace) -> int:
    from vinolm.api import Model

    params = params_from_args(args)
    model = Model(engine_from_args(args))
    if args.raw:
        response = model.stream(args.prompt, **params.to_dict())
    elif args.chat:
        response = model.chat(**params.to_dict()).send(args.prompt)
    else:
        response = model.instruct(args.prompt, **params.to_dict())
    print_response(response, as_json=args.json)
    if args.raw and not response.text().strip():
        status("the model answered nothing (it ended the text at once); drop --raw to send the prompt "
               "in its chat format, which is what an instruction-tuned model answers")
    return 0
