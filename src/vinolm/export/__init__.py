"""Source model -> self-contained OpenVINO folder usable by every engine.

Written into a temporary sibling folder and renamed at the end, so an interrupted
export never leaves something that looks like a model. Heavy imports (torch,
transformers, optimum, nncf) happen inside the functions: importing vinolm must
stay cheap.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vinolm.catalog import Int4Preset
from vinolm.errors import ExportError, InvalidRequest
from vinolm.export.layouts import TARGETS, Layout, layout_for, target_kind
from vinolm.export.report import SizeReport, adjusted_groups, folder_weight_bytes, weight_layouts
from vinolm.kernels import KERNEL_LAYOUT, Q4_1

WEIGHT_FORMATS = ("fp16", "int8", "int4", "q4_1")
#: Formats compressed by NNCF (``q4_1`` is vinolm's own: ``export.blocks``).
NNCF_FORMATS = ("int8", "int4")
#: What a setting nobody chose becomes: NNCF's asymmetric weights, INT4 in groups of 128, every layer.
NNCF_DEFAULTS = Int4Preset(sym=False, group_size=128, ratio=1.0)
#: Where neither the user nor the target CPU's layout asks for fusion: projections stay apart.
UNFUSED = Layout(fuse=False)
Progress = Callable[[str], None]


@dataclass
class ExportOptions:
    """Weight compression settings. ``None`` fields take the CPU layout, the catalog preset
    or NNCF's defaults, in that order (``with_defaults``)."""

    weight_format: str = "int8"
    group_size: int | None = None
    ratio: float | None = None
    sym: bool | None = None
    awq: bool = False
    dataset: str | None = None
    num_samples: int | None = None
    trust_remote_code: bool = False
    force: bool = False
    #: The kind of CPU the weights are laid out for (``layouts.TARGETS``).
    target_cpu: str = "auto"
    #: One matmul for the projections that share an input, q/k/v (``export.fuse``); None:
    #: the target CPU's layout says.
    fuse: bool | None = None
    #: Where each compression setting came from: "user", "cpu", "catalog" or "default".
    settings_from: dict[str, str] = field(default_factory=dict)

    def validated(self) -> ExportOptions:
        if self.weight_format not in WEIGHT_FORMATS:
            raise InvalidRequest(
                f"unknown weight format {self.weight_format!r}; use one of {', '.join(WEIGHT_FORMATS)}"
            )
        if self.target_cpu not in TARGETS:
            raise InvalidRequest(f"unknown target CPU {self.target_cpu!r}; use one of {', '.join(TARGETS)}")
        if self.group_size is not None and not (self.group_size == -1 or self.group_size > 0):
            raise InvalidRequest(f"group size must be positive or -1, got {self.group_size}")
        if self.ratio is not None and not 0 < self.ratio <= 1:
            raise InvalidRequest(f"ratio must be in (0, 1], got {self.ratio}")
        if self.num_samples is not None and self.num_samples <= 0:
            raise InvalidRequest(f"num-samples must be positive, got {self.num_samples}")
        if self.awq and self.weight_format != "int4":
            raise InvalidRequest("AWQ applies to int4 weights: add --weight-format int4")
        if self.awq and not self.dataset:
            raise InvalidRequest("AWQ needs a calibration set: add --dataset NAME|FILE")
        if not self.awq and (self.dataset or self.num_samples):
            raise InvalidRequest("--dataset and --num-samples calibrate AWQ: add --awq")
        if self.weight_format != "int4" and (self.group_size or self.ratio):
            raise InvalidRequest("--group-size and --ratio apply to int4 only")
        if self.weight_format not in NNCF_FORMATS and self.sym is not None:
            raise InvalidRequest(f"--sym/--asym apply to int8 and int4 weights, not {self.weight_format}")
        if self.weight_format == "fp16" and self.fuse is not None:
            raise InvalidRequest("--fuse/--no-fuse apply to int8, int4 and q4_1 weights, not fp16")
        return self

    def with_defaults(self, preset: Int4Preset | None) -> ExportOptions:
        """Fill unset settings from the target CPU's layout (speed), then from the catalog's
        INT4 preset (the tutorials' values, chosen for quality), and say which came whence.
        Fusion is a layout setting only: no preset has it, and nobody's choice means off."""
        names = {"int4": ("sym", "group_size", "ratio", "fuse"), "int8": ("sym", "fuse"),
                 "q4_1": ("fuse",)}.get(self.weight_format, ())
        layout = None if self.target_cpu == "any" else layout_for(self.target_cpu, self.weight_format)
        sources = (("user", self), ("cpu", layout), ("catalog", preset if self.weight_format == "int4" else None),
                   ("default", NNCF_DEFAULTS), ("default", UNFUSED))
        values: dict[str, Any] = {}
        origins: dict[str, str] = {}
        for name in names:
            for origin, source in sources:
                if source is not None and getattr(source, name, None) is not None:
                    values[name], origins[name] = getattr(source, name), origin
                    break
        return replace(self, **values, settings_from=origins)

    def for_task(self, task: str) -> ExportOptions:
        """Fusion was measured on token steps; an embedding model runs only prompt-sized passes
        (and no engine of vinolm's would load its q4_1 kernel for one)."""
        if task != GENERATION_TASK and self.weight_format == Q4_1:
            raise InvalidRequest("the q4_1 weight format applies to text-generation models, not to embedding "
                                 "models: use --weight-format int8")
        if task == GENERATION_TASK or not self.fuse:
            return self
        if self.settings_from.get("fuse") == "user":
            raise InvalidRequest("--fuse applies to text-generation models, not to embedding models")
        return replace(self, fuse=False, settings_from={**self.settings_from, "fuse": "task"})

    def compression(self) -> dict[str, Any]:
        data: dict[str, Any] = {"weight_format": self.weight_format}
        if self.weight_format in NNCF_FORMATS:
            data["sym"] = bool(self.sym)
        if self.weight_format != "fp16":
            data.update(fuse=bool(self.fuse), target_cpu=target_kind(self.target_cpu), settings_from=self.settings_from)
        if self.weight_format == Q4_1:
            data.update(kernel_layout=KERNEL_LAYOUT)
        if self.weight_format == "int4":
            data.update(group_size=self.group_size, ratio=self.ratio, awq=self.awq)
            if self.awq:
                data.update(dataset=self.dataset, num_samples=self.num_samples)
        return data


@dataclass
class ExportResult:
    path: Path
    reused: bool
    info: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


#: The two kinds of model vinolm exports: LLMs (stateful, with a detokenizer) and text
#: embedding models (one forward pass, pooled; no text comes back, so no detokenizer).
GENERATION_TASK = "text-generation-with-past"
EMBEDDING_TASK = "feature-extraction"


def is_complete(folder: Path) -> bool:
    """A finished export: the IR, the tokenizer model(s) and our record are all there."""
    names = ["openvino_model.xml", "openvino_model.bin", "openvino_tokenizer.xml", "vinolm.json"]
    if not all((folder / name).is_file() for name in names):
        return False
    return export_task(folder) == EMBEDDING_TASK or (folder / "openvino_detokenizer.xml").is_file()


def export_task(folder: Path) -> str:
    """What an export is for, from its ``vinolm.json`` (exports before embeddings: LLMs)."""
    record = read_record(folder)
    return str(record.get("task") or GENERATION_TASK)


def read_record(folder: Path) -> dict[str, Any]:
    """An export's ``vinolm.json``; {} when it is missing or damaged (the folder stays usable
    by what it holds, and ``vinolm rm`` can still delete it)."""
    try:
        data = json.loads((folder / "vinolm.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def export_model(
    source: str,
    output: Path,
    options: ExportOptions,
    *,
    source_kind: str,
    catalog_name: str | None = None,
    preset: Int4Preset | None = None,
    progress: Progress = print,
) -> ExportResult:
    """Export ``source`` (HF folder, hub id or .gguf path) to ``output``; reuse a complete
    one made with the same compression settings. ``preset``: the catalog's INT4 settings."""
    options = options.validated().with_defaults(preset)
    output = _checked_output(Path(output))
    if is_complete(output) and not options.force:
        made = read_record(output)
        wanted = options.for_task(export_task(output)).compression()
        if _settings(made) == _settings(wanted):
            return ExportResult(output, reused=True, info=made)
        progress(f"{output} holds {describe(made)} weights; exporting {describe(wanted)} instead")
        options = replace(options, force=True)
    if output.exists() and any(output.iterdir()) and not is_complete(output):
        raise ExportError(f"{output} holds files that are not a vinolm export; choose another folder (--force "
                          "replaces only an export)")
    task = _preflight(source, source_kind, options)
    options = options.for_task(task)
    started = time.perf_counter()
    new_folders = [folder for folder in (output.parent, *output.parent.parents) if not folder.exists()]
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create {output.parent}: {exc.strerror or exc}") from None
    _remove_stale_temps(output)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-{os.getpid()}-", dir=output.parent))
    try:
        with _output_to_stderr():
            hf_source = _export_into(source, tmp, options, source_kind, task, progress)
        info = {
            "source": source,
            "source_kind": source_kind,
            "catalog": catalog_name,
            "task": task,
            "trust_remote_code": options.trust_remote_code,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **options.compression(),
        }
        if options.weight_format in NNCF_FORMATS:
            info["layers"] = weight_layouts(tmp / "openvino_model.xml")
            _say_adjusted_groups(info, progress)
        if options.fuse:
            from vinolm.export.fuse import fuse_projections

            progress("fusing the projections that share an input (q/k/v)")
            info["fused_matmuls"] = fuse_projections(tmp / "openvino_model.xml")
        if options.weight_format == Q4_1:
            from vinolm.export.blocks import to_q4_1

            progress("quantizing the weights to 4-bit blocks of 32 (q4_1, for vinolm's kernel)")
            info["layers"], mlps, adds = to_q4_1(tmp / "openvino_model.xml", fuse=bool(options.fuse))
            if mlps:
                info["fused_mlps"] = mlps
            if adds:
                info["fused_matmul_adds"] = adds
        if task == EMBEDDING_TASK:
            from vinolm.export.embedding import embedding_info

            info["embedding"] = embedding_info(Path(hf_source), catalog_name)
        (tmp / "vinolm.json").write_text(json.dumps(info, indent=2) + "\n")
        if output.exists():
            shutil.rmtree(output)
        os.replace(tmp, output)
    except BaseException as exc:
        full = _disk_filled(exc, output.parent)
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in new_folders:  # the folders made for this export go with it (a failed pull left them empty)
            with contextlib.suppress(OSError):
                folder.rmdir()
        if full:
            raise ExportError(f"the disk holding {output.parent} filled up during the export (the partial "
                              "export is removed): free some space, or export to another disk (-o, or "
                              "VINOLM_HOME for prepared models)") from exc
        raise
    return ExportResult(output, reused=False, info=info, seconds=time.perf_counter() - started)


#: A failed write with less than this free is a full disk (OpenVINO's serializer says only
#: "basic_ios::clear: iostream error"; safetensors says "os error 28").
LOW_SPACE = 256 * 1024**2


def _disk_filled(exc: BaseException, folder: Path) -> bool:
    """Whether ``exc`` (or what caused it) is a write that found ``folder``'s disk full."""
    causes = []
    cause: BaseException | None = exc
    while cause is not None:
        causes.append(cause)
        cause = cause.__cause__ or cause.__context__
    text = " ".join(str(cause).lower() for cause in causes)
    if any(isinstance(cause, OSError) and cause.errno == errno.ENOSPC for cause in causes) \
            or "no space left" in text or "os error 28" in text:
        return True
    return "iostream error" in text and shutil.disk_usage(folder).free < LOW_SPACE


def _say_adjusted_groups(info: dict[str, Any], progress: Progress) -> None:
    """A group size NNCF could not use everywhere is said, not hidden behind the one asked for."""
    if info["weight_format"] != "int4" or not (other := adjusted_groups(info["layers"], info["group_size"])):
        return
    done = ", ".join(f"{n} in {_grouping(name)}" for name, n in other.items())
    progress(f"{_grouping(info['group_size'])} do not fit every layer's inputs, so NNCF adjusted them: "
             f"{done} (INT4 matrices; 'layers' in vinolm.json counts them all)")


def _grouping(layout: str | int) -> str:
    """``int4 g64`` or 64 -> "groups of 64"; ``int4 channel-wise`` or -1 -> "channel-wise"."""
    size = str(layout).rsplit(" g", 1)[-1]
    return "channel-wise" if size in ("-1", "int4 channel-wise") else f"groups of {size}"


def _settings(record: dict[str, Any]) -> dict[str, Any]:
    """What makes two exports' weights differ (records older than ``sym`` for int8 were asymmetric)."""
    keys = {"fp16": (), "int8": ("sym", "fuse"), "q4_1": ("fuse", "kernel_layout")}.get(
        record.get("weight_format", ""), ("sym", "group_size", "ratio", "awq", "fuse"))
    return {"weight_format": record.get("weight_format"),
            **{k: record.get(k) if k in ("group_size", "ratio", "kernel_layout") else bool(record.get(k))
               for k in keys}}


def describe(record: dict[str, Any]) -> str:
    """A compression record in a few words: ``int4 sym g128 r1.0``, ``int8 asym``, ``fp16``."""
    settings = _settings(record)
    words = [str(settings["weight_format"])]
    if "sym" in settings:
        words.append("sym" if settings["sym"] else "asym")
    if "group_size" in settings:  # None in records of exports that left them to NNCF
        group, ratio = settings["group_size"], settings["ratio"]
        words += [] if group is None else ["channel-wise" if group == -1 else f"g{group}"]
        words += ([] if ratio is None else [f"r{ratio}"]) + (["awq"] if settings["awq"] else [])
    if settings.get("kernel_layout"):
        words.append(f"layout {settings['kernel_layout']}")
    return " ".join(words + (["fused"] if settings.get("fuse") else []))


def _preflight(source: str, source_kind: str, options: ExportOptions) -> str:
    """Fail in a second, not after minutes of conversion: calibration data and architecture.
    Returns the export task: an LLM unless the architecture can only embed text."""
    if options.awq:
        from vinolm.export.calibration import load_calibration

        load_calibration(options.dataset or "", options.num_samples)
    if source_kind != "hf":
        return GENERATION_TASK
    config_path = Path(source) / "config.json"
    try:
        model_type = json.loads(config_path.read_text(encoding="utf-8")).get("model_type")
    except ValueError as exc:
        raise InvalidRequest(f"{config_path} is not valid JSON: {exc}") from exc
    return check_architecture(str(model_type), source)


def check_architecture(model_type: str, source: str) -> str:
    """The task ``model_type`` exports for (text generation first), or InvalidRequest."""
    try:
        import optimum.exporters.openvino  # noqa: F401  (registers the OpenVINO exporters)
        from optimum.exporters.tasks import TasksManager
    except ImportError as exc:
        raise ExportError(
            f"exporting needs the export extra ({exc.name} is missing): pip install 'vinolm[export]'"
        ) from exc
    try:
        tasks = TasksManager.get_supported_tasks_for_model_type(
            model_type, exporter="openvino", library_name="transformers"
        )
    except KeyError:
        tasks = {}
    if GENERATION_TASK in tasks:
        return GENERATION_TASK
    if EMBEDDING_TASK in tasks:
        return EMBEDDING_TASK
    raise InvalidRequest(
        f"the architecture {model_type!r} of {source} is not supported: it is neither a text-generation "
        "nor a text-embedding model that optimum-intel can export to OpenVINO"
    )


@contextlib.contextmanager
def _output_to_stderr() -> Iterator[None]:
    """What the exporting libraries print goes to stderr: NNCF logs and draws its progress on
    stdout, which ``vinolm embed`` keeps for its JSON lines. Both levels: Python's
    ``sys.stdout`` and file descriptor 1 (native code, and loggers holding the stream)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()  # what a logger holding the real stream buffered goes out while 1 is stderr
        os.dup2(saved, 1)
        os.close(saved)


def _checked_output(output: Path) -> Path:
    """``output`` as an absolute path, refused where an export cannot go. The temporary
    folder lives beside ``output`` and replaces it at the end: for ``.`` (whose parent is
    itself) it lived inside the folder it then deleted, with everything else in it."""
    resolved = output.expanduser().resolve()
    if Path.cwd().resolve().is_relative_to(resolved):  # "/" too
        raise ExportError(f"{output} is the current folder or holds it; export into a new folder (-o NAME)")
    if resolved.exists() and not resolved.is_dir():
        raise ExportError(f"{output} is a file, not a folder")
    return resolved


def _remove_stale_temps(output: Path) -> None:
    """Delete temporary folders of exports to ``output`` whose process died (killed midway)."""
    for stale in output.parent.glob(f".{output.name}.tmp-*"):
        pid = stale.name.removeprefix(f".{output.name}.tmp-").split("-", 1)[0]
        if not pid.isdigit() or not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        pass
    return True


def _export_into(source: str, out: Path, options: ExportOptions, source_kind: str, task: str,
                 progress: Progress) -> str:
    """Convert into ``out``; returns the HF folder or hub id the model was read from."""
    # The scratch lives inside ``out``, so a killed export leaves one hidden folder only.
    with tempfile.TemporaryDirectory(prefix="vinolm-hf-", dir=out) as scratch:
        hf_source = source
        if source_kind == "gguf":
            from vinolm.export.gguf import gguf_to_hf

            progress(f"dequantizing {Path(source).name} to a Hugging Face model")
            hf_source = str(gguf_to_hf(Path(source), Path(scratch)))
        progress(f"converting to OpenVINO IR with {options.weight_format} weights")
        _optimum_export(hf_source, out, options, task)
        progress("converting the tokenizer to OpenVINO")
        from vinolm.export.tokenizer import export_tokenizer

        export_tokenizer(hf_source, out, trust_remote_code=options.trust_remote_code,
                         detokenizer=task == GENERATION_TASK)
    return hf_source if source_kind != "gguf" else source


def _optimum_export(source: str, out: Path, options: ExportOptions, task: str = GENERATION_TASK) -> None:
    """Mirror ``optimum-cli export openvino``: export in 16 bit, then compress the weights."""
    try:
        from optimum.exporters.openvino.__main__ import _main_quantize, main_export
        from optimum.intel import OVConfig, OVWeightQuantizationConfig
    except ImportError as exc:
        raise ExportError(
            f"exporting needs the export extra ({exc.name} is missing): pip install 'vinolm[export]'"
        ) from exc
    quant = _quantization_config(options, OVWeightQuantizationConfig)
    try:
        main_export(
            model_name_or_path=source,
            output=out,
            task=task,
            trust_remote_code=options.trust_remote_code,
            ov_config=OVConfig(quantization_config=quant,
                               dtype="fp16" if options.weight_format == Q4_1 else options.weight_format),
            convert_tokenizer=False,
            stateful=task == GENERATION_TASK,
        )
        if quant is not None:
            _main_quantize(
                model_name_or_path=source,
                task=task,
                library_name="transformers",
                quantization_config=quant,
                output=out,
                cache_dir=None,
                trust_remote_code=options.trust_remote_code,
            )
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(_explain_export_failure(source, exc)) from exc


def _quantization_config(options: ExportOptions, cfg_cls: type) -> Any:
    if options.weight_format not in NNCF_FORMATS:
        return None
    if options.weight_format == "int8":
        return cfg_cls(bits=8, sym=bool(options.sym), group_size=-1, ratio=1.0, dtype="int8")
    kwargs: dict[str, Any] = {
        "bits": 4,
        "sym": bool(options.sym),
        "group_size": options.group_size or NNCF_DEFAULTS.group_size,
        "ratio": options.ratio or NNCF_DEFAULTS.ratio,
        "dtype": "int4",
        # Hidden sizes like 576 are not multiples of 128: let NNCF pick a divisor
        # instead of failing, as a user would expect from a preset.
        "group_size_fallback": "adjust",
    }
    if options.awq:
        from vinolm.export.calibration import load_calibration

        kwargs.update(
            quant_method="awq",
            dataset=load_calibration(options.dataset or "", options.num_samples),
            num_samples=options.num_samples,
        )
    return cfg_cls(**kwargs)


def _explain_export_failure(source: str, exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    lowered = text.lower()
    if "trust_remote_code" in lowered or "remote code" in lowered:
        return f"{source} needs custom code from its repository: add --trust-remote-code if you trust it"
    if any(word in lowered for word in ("connect", "offline", "resolve", "couldn't", "network")):
        return f"cannot download {source} from the Hugging Face hub (no network?): {text}"
    if "not supported" in lowered or "unrecognized configuration" in lowered or "model_type" in lowered:
        return f"the architecture of {source} is not supported for export: {text}"
    return f"export of {source} failed: {text}"


__all__ = [
    "EMBEDDING_TASK",
    "GENERATION_TASK",
    "WEIGHT_FORMATS",
    "ExportOptions",
    "ExportResult",
    "SizeReport",
    "describe",
    "export_model",
    "export_task",
    "folder_weight_bytes",
    "is_complete",
]
