"""bench.json -> Markdown tables and PNG plots.

Every cell is a median with its min–max over the runs, because on a shared machine one
slow run says more about the neighbours than about the engine. Ratios compare medians
of rows measured in the same run, which is the only comparison this machine supports.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vinolm.errors import EngineError, VinolmError

Row = dict[str, Any]
#: The llama.cpp rows a single-stream row is compared with, the C++ one first.
SINGLE_PEERS: tuple[str, ...] = ("llama-bench", "llama.cpp")
#: The llama.cpp servers a throughput row is compared with, the honest one first.
SERVER_PEERS: tuple[str, ...] = ("llama-server", "llama-cpp-python")


def _stat(row: Row, key: str) -> dict[str, float] | None:
    return (row.get("stats") or {}).get(key)


def median(row: Row, key: str) -> float | None:
    stat = _stat(row, key)
    return stat["median"] if stat else None


def _cell(row: Row, key: str, scale: float = 1.0, digits: int = 1) -> str:
    stat = _stat(row, key)
    if not stat:
        return "–"
    lo, mid, hi = (stat[k] * scale for k in ("min", "median", "max"))
    return f"{mid:.{digits}f} ({lo:.{digits}f}–{hi:.{digits}f})" if lo != hi else f"{mid:.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "–"


def _ok(row: Row) -> bool:
    return "skipped" not in row and "error" not in row


def _note(row: Row) -> str:
    if "skipped" in row:
        return f"skipped: {row['skipped']}"
    if "error" in row:
        return "error: " + " ".join(str(row["error"]).split())[-200:]
    return ""


def section(results: dict[str, Any], name: str) -> list[Row]:
    return [r for r in results["results"] if r.get("section") == name]


def single_table(rows: list[Row]) -> str:
    """Engines and peers, one stream: latency, speed, memory, and each row against llama.cpp
    (its own llama-bench where measured, else the llama-cpp-python loop)."""
    refs = [r for r in rows if _ok(r) and r.get("peer") in SINGLE_PEERS]
    ref = min(refs, key=lambda r: SINGLE_PEERS.index(r["peer"]), default=None)
    lines = [
        (
            "| engine / peer | load s | TTFT ms | TPOT ms | decode tok/s | prefill tok/s | peak RSS MB "
            "| decode vs llama.cpp | prefill vs llama.cpp |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if not _ok(r):
            lines.append(f"| {r['label']} | {_note(r)} ||||||||")
            continue
        peer = ref if not r.get("constraint") else None  # llama.cpp's rows are unconstrained
        ratios = [
            _ratio(median(r, k), median(peer, k) if peer else None) for k in ("decode_tps", "prefill_tps")
        ]
        lines.append(
            f"| {r['label']} | {r.get('load_s', 0):.2f} | {_cell(r, 'ttft_s', 1000)} | {_cell(r, 'tpot_s', 1000, 2)} "
            f"| {_cell(r, 'decode_tps')} | {_cell(r, 'prefill_tps', digits=0)} | {r.get('peak_rss_mb', '–')} "
            f"| {ratios[0]} | {ratios[1]} |"
        )
    return "\n".join(lines)


def ratio_table(rows: list[Row]) -> str:
    """Each vinolm engine's decode and prefill medians over each peer's (the issue's targets),
    and, where llama.cpp ran in several formats, over its fastest row for each measure."""
    ours = [r for r in rows if _ok(r) and str(r["label"]).startswith("vinolm") and not r.get("constraint")]
    peers = [r for r in rows if _ok(r) and not str(r["label"]).startswith("vinolm")]
    if not ours or not peers:
        return ""
    llama = [p for p in peers if str(p.get("peer", "")).startswith(SINGLE_PEERS)]
    best = {key: fastest(llama, key) for key in ("decode_tps", "prefill_tps")} if len(llama) > 1 else {}
    head = "| vinolm (decode / prefill) | " + " | ".join(p["label"] for p in peers) + " |"
    lines = [head + (" llama.cpp at its fastest |" if best else ""), "|---|" + "---:|" * (len(peers) + bool(best))]
    for r in ours:
        cells = [f"{_ratio(median(r, 'decode_tps'), median(p, 'decode_tps'))} / "
                 f"{_ratio(median(r, 'prefill_tps'), median(p, 'prefill_tps'))}" for p in peers]  # fmt: skip
        if best:
            cells.append(" / ".join(f"{_ratio(median(r, key), median(p, key))} ({p['label']})" for key, p in best.items()))
        lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fastest(rows: list[Row], key: str) -> Row:
    """The row of the highest median ``key``. Issue 16's targets are against llama.cpp at its
    fastest, and which format that is depends on the CPU and the measure: on an AVX2 Zen 3 its
    Q4_0 prefilled 1.7-1.9x the shipped Q4_1 but decoded 1.07x (docs/benchmarks.md 29)."""
    return max(rows, key=lambda r: median(r, key) or 0.0)


def levels(row: Row) -> dict[int, Row]:
    return {int(lv["concurrency"]): lv for lv in row.get("levels") or []}


def _level_cell(level: Row | None) -> str:
    if not level:
        return "–"
    rounds = [x for x in level["aggregate_tps_rounds"] if x is not None]
    mid = level["aggregate_tps_median"]
    return f"{mid:.1f} ({min(rounds):.1f}–{max(rounds):.1f})" if len(set(rounds)) > 1 else f"{mid:.1f}"


def llama_server_levels(rows: list[Row]) -> tuple[str | None, dict[int, float]]:
    """llama.cpp's server per level: the fastest row of its own C++ llama-server where
    measured (one per ``-fa`` setting asked), else of the one llama-cpp-python serves."""
    peers = [r for r in rows if _ok(r) and r.get("peer") in SERVER_PEERS]
    if not peers:
        return None, {}
    peer = min((r["peer"] for r in peers), key=SERVER_PEERS.index)
    best: dict[int, float] = {}
    for r in (r for r in peers if r["peer"] == peer):
        for c, lv in levels(r).items():
            if (tps := lv["aggregate_tps_median"]) is not None:
                best[c] = max(best.get(c, tps), tps)
    return peer, best


def throughput_table(rows: list[Row]) -> str:
    """Aggregate tokens/s per level, scaling over c=1, and against in-process / llama.cpp's
    server (``llama_server_levels``)."""
    inprocs = {r.get("constraint"): r for r in reversed(rows) if _ok(r) and r.get("mode") == "in-process batching"}
    llama, best = llama_server_levels(rows)
    lines = [
        (
            "| source | concurrency | aggregate tok/s | vs c=1 | TTFT ms median (min–max) | vs in-process "
            "| vs llama.cpp's server |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if not _ok(r):
            lines.append(f"| {r['label']} | {_note(r)} ||||||")
            continue
        mine = levels(r)
        base = (mine.get(1) or {}).get("aggregate_tps_median")
        inproc = inprocs.get(r.get("constraint"))  # the in-process row under the same constraint
        for c, lv in sorted(mine.items()):
            tps = lv["aggregate_tps_median"]
            ttft = (
                "–"
                if lv.get("ttft_s_median") is None
                else (
                    f"{lv['ttft_s_median'] * 1000:.0f} ({lv['ttft_s_min'] * 1000:.0f}–{lv['ttft_s_max'] * 1000:.0f})"
                )
            )
            vs_in = (
                _ratio(tps, (levels(inproc).get(c) or {}).get("aggregate_tps_median"))
                if inproc and r is not inproc
                else "–"
            )
            vs_ll = _ratio(tps, best.get(c)) if r.get("peer") != llama and not r.get("constraint") else "–"
            lines.append(
                f"| {r['label']} | {c} | {_level_cell(lv)} | {_ratio(tps, base)} | {ttft} | {vs_in} | {vs_ll} |"
            )
    return "\n".join(lines)


def constraint_table(rows: list[Row]) -> str:
    """What the JSON-schema constraint costs: each constrained row over its unconstrained
    twin, measured next to it in the same run (single stream: decode tok/s and TTFT;
    throughput: aggregate tok/s per level). The issue's target: >= 0.90x on tokens/s."""
    by_label = {r["label"]: r for r in rows}
    lines = ["| row | measure | without | with json-schema | with / without |", "|---|---|---:|---:|---:|"]
    for twin in rows:
        base = by_label.get(twin.get("unconstrained"))
        if not twin.get("constraint") or base is None:
            continue
        if not (_ok(twin) and _ok(base)):
            lines.append(f"| {base['label']} | {_note(base) or _note(twin)} ||||")
            continue
        for measure, without, with_ in _constraint_pairs(base, twin):
            cells = [f"{x:.1f}" if x is not None else "–" for x in (without, with_)]
            lines.append(f"| {base['label']} | {measure} | {cells[0]} | {cells[1]} | {_ratio(with_, without)} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def _constraint_pairs(base: Row, twin: Row) -> list[tuple[str, float | None, float | None]]:
    """(measure, without, with) medians of a row and its constrained twin."""
    if base.get("levels"):
        theirs = levels(twin)
        return [(f"aggregate tok/s c={c}", lv["aggregate_tps_median"],
                 (theirs.get(c) or {}).get("aggregate_tps_median")) for c, lv in sorted(levels(base).items())]  # fmt: skip
    ttft = [None if t is None else t * 1000 for t in (median(base, "ttft_s"), median(twin, "ttft_s"))]
    return [("decode tok/s", median(base, "decode_tps"), median(twin, "decode_tps")),
            ("TTFT ms", ttft[0], ttft[1])]  # fmt: skip


def shapes_table(rows: list[Row]) -> str:
    """Size (as the tutorials print it: compression vs FP16), speed, and the memory bandwidth
    that speed implies (weights bytes x tokens/s: a decode step reads every weight once)."""
    lines = [
        "| shape | weights | size MB | compression vs fp16 | decode tok/s | GB/s | prefill tok/s | decode vs fp16 |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    by_shape: dict[str, list[Row]] = {}
    for r in rows:
        by_shape.setdefault(r["shape"], []).append(r)
    for shape, group in by_shape.items():
        size = {r["format"]: _weight_bytes(r.get("model")) for r in group}
        fp16 = next((r for r in group if r["format"] == "fp16" and _ok(r)), None)
        for r in group:
            if not _ok(r):
                lines.append(f"| {shape} | {r['format']} | {_note(r)} ||||||")
                continue
            mb = size[r["format"]] / 2**20
            rate = _ratio(size.get("fp16"), size[r["format"]])
            vs = _ratio(median(r, "decode_tps"), median(fp16, "decode_tps") if fp16 else None)
            decode = median(r, "decode_tps")
            gbps = f"{size[r['format']] * decode / 1e9:.1f}" if decode else "–"
            lines.append(f"| {shape} | {_layout(r)} | {mb:.0f} | {rate} | {_cell(r, 'decode_tps', digits=2)} "
                         f"| {gbps} | {_cell(r, 'prefill_tps', digits=0)} | {vs} |")  # fmt: skip
    return "\n".join(lines)


def _layout(row: Row) -> str:
    """A vinolm export's format with the layout it was made with (``int4 sym g128 r0.8
    (avx512-bf16)``): the same format name means other weights on another kind of CPU; and
    its activation groups where they are not vinolm's usual ones (``layouts.activation_group``)."""
    record = Path(row.get("model") or "") / "vinolm.json"
    if not record.is_file():
        return str(row["format"])
    from vinolm.engines.ovconfig import CPU_DEFAULTS
    from vinolm.export import describe

    info = json.loads(record.read_text())
    group = (row.get("properties") or {}).get("DYNAMIC_QUANTIZATION_GROUP_SIZE")
    usual = CPU_DEFAULTS["DYNAMIC_QUANTIZATION_GROUP_SIZE"]
    return (describe(info) + (f" ({info['target_cpu']})" if info.get("target_cpu") else "")
            + ("" if group in (None, usual) else ", no activation quantization" if group == 0
               else f", activation groups of {group}"))


def _weight_bytes(model: str | None) -> int:
    """What one decode step reads: an IR folder's weights, or a GGUF file whole."""
    from vinolm.export.report import folder_weight_bytes

    if not model or not Path(model).exists():
        return 0
    return Path(model).stat().st_size if Path(model).is_file() else folder_weight_bytes(Path(model))


def cold_start_table(rows: list[Row]) -> str:
    """Per model: its first load (an empty OpenVINO model cache: compiling), the loads after it
    (as every later load of a user's: from the cache where OpenVINO can read it back), and its
    first request's latency unloaded vs loaded: what a user waits when the model is not in memory."""
    lines = [
        ("| model | task | first load s (compiles) | load s (later loads) | TTFT ms unloaded | TTFT ms loaded "
         "| total ms unloaded | total ms loaded | TTFT unloaded / loaded | total unloaded / loaded |"),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    runs = [f"{r['cold_runs']} rounds per model, chat answers of {r['new_tokens']} tokens" for r in rows if _ok(r)]
    for r in rows:
        if not _ok(r):
            lines.append(f"| {r['label']} | {_note(r)} |||||||||")
            continue
        for m in r["models"]:
            ratios = [_ratio(median(m, f"unloaded_{k}"), median(m, f"loaded_{k}")) for k in ("ttft_s", "total_s")]
            cells = [_cell(m, f"{state}_{k}", 1000, 0)
                     for k in ("ttft_s", "total_s") for state in ("unloaded", "loaded")]
            lines.append(f"| {m['name']} | {m['task']} | {m['first_load_s']:.2f} | {_cell(m, 'load_s', digits=2)} "
                         f"| {' | '.join(cells)} | {ratios[0]} | {ratios[1]} |")  # fmt: skip
    head = f"{'; '.join(runs)}; every request a new text.\n\n" if runs else ""
    return head + "\n".join(lines)


def machine() -> dict[str, Any]:
    """What the numbers were measured on: the CPU, its ISA by /proc/cpuinfo (and its kind)
    under the cap ``ONEDNN_MAX_CPU_ISA`` puts on OpenVINO's kernels, OpenVINO's view of the
    real CPU, and the cap itself (set, a run on one CPU measures an older kind's kernels:
    docs/benchmarks.md says which rows did)."""
    from vinolm.cpu import cpu_kind, isa, isa_cap, memory_gb
    from vinolm.engines.ovconfig import optimization_capabilities

    cpu = platform.processor()
    try:
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                cpu = text.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "memory_gb": round(memory_gb(), 1), "isa": isa(),
            "cpu_kind": cpu_kind(), "openvino_capabilities": optimization_capabilities(),
            "isa_cap": isa_cap(),
            "python": platform.python_version(), "platform": platform.platform()}  # fmt: skip


def isa_line(mach: dict[str, Any]) -> str:
    """``ISA: AVX2 AVX-512F ... (avx512-bf16; OpenVINO: BF16 FP32 INT8)``; older results
    carry only the flag list."""
    names = " ".join(mach.get("isa") or []) or "no AVX2"
    extra = [mach["cpu_kind"]] if mach.get("cpu_kind") else []
    if mach.get("openvino_capabilities"):
        extra.append("OpenVINO: " + " ".join(mach["openvino_capabilities"]))
    if mach.get("isa_cap"):
        extra.append(f"kernels capped at {mach['isa_cap']} by ONEDNN_MAX_CPU_ISA")
    return f"ISA: {names}" + (f" ({'; '.join(extra)})" if extra else "")


def markdown(results: dict[str, Any]) -> str:
    cfg, mach = results["config"], results["machine"]
    parts = [
        f"# vinolm bench — {results['started']}",
        f"`{results.get('command') or 'vinolm bench'}`",
        (
            f"Machine: {mach['cpu']}, {mach['cpu_count']} cores, {mach['memory_gb']} GB; "
            f"{isa_line(mach)}. Model IR: `{results['model_ir']}`; "
            f"GGUF: `{results.get('model_gguf') or '–'}`. Prompt {cfg['prompt_tokens']} tokens, "
            f"{cfg['new_tokens']} new tokens (EOS ignored, greedy), warm-up {cfg['warmup']}, "
            f"{cfg['runs']} runs{_repeats(cfg)}; every run a new prompt; cells are median (min–max)."
        ),
    ]
    tables: list[tuple[str, Callable[[list[Row]], str], str]] = [
        ("Single stream", single_table, "single"),
        ("vinolm over each peer (decode / prefill medians)", ratio_table, "single"),
        ("Throughput vs concurrency", throughput_table, "throughput"),
        ("Model shapes: size and speed per weight format", shapes_table, "shapes"),
        ("Cold start: load time and the first request with the model unloaded vs loaded", cold_start_table,
         "cold-start"),
    ]
    for title, build, name in tables:
        rows = section(results, name)
        table = build(rows) if rows else ""
        if table:
            parts += [f"## {title}", table]
    constrained = constraint_table(section(results, "single") + section(results, "throughput"))
    if constrained:
        parts += [f"## JSON-schema constraint: with / without (schema `{cfg.get('json_schema')}`)",
                  ("The constrained rows do not ignore EOS: the schema's grammar masks it until a document "
                   "ends, and no document fits in the new tokens, so each run still generates exactly that "
                   "many, every one under the constraint (each run checked to start a valid document)."),
                  constrained]  # fmt: skip
    loads = [r.get("loadavg_before") for r in results["results"] if r.get("loadavg_before")]
    if loads:
        parts.append(f"Load average (1 min) before each job: {', '.join(f'{x[0]:.1f}' for x in loads)}.")
    return "\n\n".join(parts) + "\n"


def _repeats(cfg: dict[str, Any]) -> str:
    repeat = int(cfg.get("repeat", 1))
    return f" per process, single-stream rows {repeat} processes each round-robin ({cfg['runs'] * repeat} runs)" if repeat > 1 else ""


def write(results: dict[str, Any], out: Path) -> list[Path]:
    """bench.json, bench.md and the plots into ``out``; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    (out / "bench.md").write_text(markdown(results), encoding="utf-8")
    return [out / "bench.json", out / "bench.md", *plot_all(results, out)]


# -- plots ---------------------------------------------------------------------------


def plot_all(results: dict[str, Any], out: Path) -> list[Path]:
    """throughput.png (aggregate tokens/s vs concurrency), ttft.png and tpot.png (per row)."""
    import matplotlib

    matplotlib.use("Agg")
    written = []
    single = [r for r in section(results, "single") if _ok(r)]
    if single:
        written.append(_bars(single, "ttft_s", 1000, "time to first token (ms)", out / "ttft.png", results))
        written.append(_bars(single, "tpot_s", 1000, "time per output token (ms)", out / "tpot.png", results))
    tput = [r for r in section(results, "throughput") if _ok(r) and r.get("levels")]
    if tput:
        written.append(_throughput(tput, out / "throughput.png", results))
    return written


def _bars(rows: list[Row], key: str, scale: float, ylabel: str, path: Path, results: dict[str, Any]) -> Path:
    import matplotlib.pyplot as plt

    stats = [_stat(r, key) or {"median": 0.0, "min": 0.0, "max": 0.0} for r in rows]
    mids = [s["median"] * scale for s in stats]
    errs = [
        [m - s["min"] * scale for m, s in zip(mids, stats)],
        [s["max"] * scale - m for m, s in zip(mids, stats)],
    ]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(rows)), 4.2))
    colors = ["tab:blue" if str(r["label"]).startswith("vinolm") else "tab:gray" for r in rows]
    ax.bar(range(len(rows)), mids, yerr=errs, capsize=4, color=colors)
    ax.set_xticks(range(len(rows)), [str(r["label"]) for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{ylabel}: median, min–max ({_subtitle(results)})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _throughput(rows: list[Row], path: Path, results: dict[str, Any]) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r in rows:
        lv = sorted(levels(r).items())
        ax.plot(
            [c for c, _ in lv], [x["aggregate_tps_median"] for _, x in lv], marker="o", label=str(r["label"])
        )
    ax.set_xlabel("concurrent requests")
    ax.set_ylabel("aggregate generated tokens/s")
    ax.set_xticks(results["config"]["levels"])
    ax.set_title(f"throughput vs concurrency ({_subtitle(results)})", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _subtitle(results: dict[str, Any]) -> str:
    cfg = results["config"]
    return f"prompt {cfg['prompt_tokens']}, {cfg['new_tokens']} new tokens"


def run_tool(parser: argparse.ArgumentParser, argv: list[str] | None, problem: Callable[[Any], str | None],
             measure: Callable[[Any], dict[str, Any]], markdown: Callable[[dict[str, Any]], str]) -> int:
    """The tail of each one-process bench tool (interleave, burst, agreement): parse, refuse
    bad arguments with the parser's one-line error, measure, print the table or the JSON."""
    parser.add_argument("--json", action="store_true", help="print the JSON result instead of the table")
    args = parser.parse_args(argv)
    if (message := problem(args)) is not None:
        parser.error(message)
    with one_line_errors(parser.prog):
        result = {**measure(args), "machine": machine()}
    print(json.dumps(result) if args.json else f"{isa_line(result['machine'])}\n\n{markdown(result)}")
    return 0


@contextmanager
def one_line_errors(prog: str) -> Iterator[None]:
    """vinolm's own errors met while measuring (a property OpenVINO refuses, a model that does
    not load), and OpenVINO's where a tool compiles a model itself, as one line and the
    ``vinolm`` command's exit codes, not a traceback: a sweep tries properties that some CPU
    or engine does not take."""
    from vinolm.engines.common import first_line

    try:
        yield
    except VinolmError as exc:
        print(f"{prog}: error: {exc.message}", file=sys.stderr)
        raise SystemExit(1 if isinstance(exc, EngineError) else 2) from None
    except RuntimeError as exc:
        if not str(exc).startswith("Exception from"):  # not OpenVINO's: a bug, keep its traceback
            raise
        print(f"{prog}: error: OpenVINO: {first_line(exc)}", file=sys.stderr)
        raise SystemExit(1) from None
