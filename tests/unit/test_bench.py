"""``vinolm bench``: the shared schema, the report, and one tiny end-to-end run.

The pure parts (prompt building, statistics, tables) run without OpenVINO. The
end-to-end test runs the real command in a subprocess on the default model (genai plus
one peer, concurrency 1,2) and checks the files and fields, never the timings: on a
shared machine they say nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vinolm.bench import report
from vinolm.bench.runner import BenchConfig, engine_variant, merge_repeats, parse_line
from vinolm.bench.schema import (
    level_record,
    new_prompts,
    parse_levels,
    prompt_ids,
    prompt_text,
    round_record,
    timed_record,
)
from vinolm.errors import InvalidRequest
from vinolm.kernels import missing_cpu_features

REPO = Path(__file__).resolve().parents[2]


def _words(text: str) -> list[int]:
    """A toy tokenizer: one id per whitespace-separated word (hash-free, reversible below)."""
    return [len(w) for w in text.split()]


def _word_vocabulary() -> tuple[Callable[[str], list[int]], Callable[[list[int]], str]]:
    """A reversible toy tokenizer: each new whitespace-separated word gets the next id."""
    vocab: dict[str, int] = {}

    def tokenize(text: str) -> list[int]:
        return [vocab.setdefault(w, len(vocab)) for w in text.split()]

    def detokenize(ids: list[int]) -> str:
        words = {i: w for w, i in vocab.items()}
        return " ".join(words[i] for i in ids)

    return tokenize, detokenize


def test_prompt_ids_cut_to_length() -> None:
    assert len(prompt_ids(_words, 5)) == 5
    assert len(prompt_ids(_words, 3000)) == 3000  # the filler repeats as needed


def test_prompt_text_has_exact_token_count() -> None:
    tokenize, detokenize = _word_vocabulary()
    for n in (1, 16, 200):
        assert len(tokenize(prompt_text(tokenize, detokenize, n))) == n


def test_every_prompt_is_new_from_its_first_tokens() -> None:
    """A cached prefix would turn a timed prefill into a cache hit: consecutive prompts
    differ within their first two tokens, and each keeps the exact length."""
    tokenize, detokenize = _word_vocabulary()
    source = new_prompts(tokenize, detokenize, 64)
    prompts = [tokenize(source()) for _ in range(60)]
    assert all(len(ids) == 64 for ids in prompts)
    assert len({tuple(ids[:2]) for ids in prompts}) == len(prompts)
    assert prompt_ids(tokenize, 8, 3)[:2] != prompt_ids(tokenize, 8, 4)[:2]


def test_repeats_pool_their_runs() -> None:
    def line(tpots: list[float], load: float) -> dict:
        runs = [timed_record(100, 11, 0.0, 0.1, 0.1 + 10 * t) for t in tpots]
        return {"label": "x", "runs": runs, "load_s": load, "loadavg_before": [load], "peak_rss_mb": load}

    merged = merge_repeats([line([0.01, 0.02], 1.0), line([0.03], 3.0), line([0.04], 2.0)])
    assert len(merged["runs"]) == 4 and merged["repeats"] == 3
    assert merged["stats"]["tpot_s"] == {"median": 0.025, "min": 0.01, "max": 0.04}
    assert merged["load_s"] == 2.0 and merged["peak_rss_mb"] == 3.0
    assert merged["loadavg_each"] == [[1.0], [3.0], [2.0]]
    failed = {"label": "x", "error": "boom"}
    assert merge_repeats([line([0.01], 1.0), failed]) is failed


def test_timed_record_definitions() -> None:
    run = timed_record(100, 11, start=0.0, first=0.5, end=1.5)
    assert run["ttft_s"] == 0.5 and run["prefill_tps"] == 200.0
    assert run["tpot_s"] == pytest.approx(0.1) and run["decode_tps"] == pytest.approx(10.0)
    assert timed_record(10, 1, 0.0, 0.2, 0.2)["decode_tps"] is None


def test_levels_and_rounds() -> None:
    assert parse_levels("1,4,8") == [1, 4, 8]
    assert parse_levels("none") == []
    level = level_record(4, [round_record(2.0, 40, [0.1, 0.2]), round_record(1.0, 40, [0.3])])
    assert level["aggregate_tps_median"] == 30.0
    assert level["ttft_s_median"] == 0.2


def test_engine_variants() -> None:
    assert engine_variant("genai") == ("genai", [])
    assert engine_variant("native-hybrid")[0] == "native"
    assert engine_variant("genai@A=1,B=x") == ("genai", ["A=1", "B=x"])


def test_parse_line_takes_the_last_json_line() -> None:
    assert parse_line('noise\n{"peer": "x"}\n') == {"peer": "x"}
    assert parse_line("no json here") is None


def _row(label: str, decode: float, prefill: float, **extra: object) -> dict[str, object]:
    stats = {
        "decode_tps": {"median": decode, "min": decode, "max": decode},
        "prefill_tps": {"median": prefill, "min": prefill, "max": prefill},
    }
    return {"label": label, "section": "single", "stats": stats, "load_s": 1.0, "peak_rss_mb": 100.0, **extra}


@pytest.mark.parametrize("module", ["vinolm.bench.worker", "vinolm.bench.peers.genai_direct",
                                    "vinolm.bench.peers.optimum_peer", "vinolm.bench.peers.torch_peer",
                                    "vinolm.bench.peers.llama_bench", "vinolm.bench.peers.llamacpp"])
@pytest.mark.parametrize("sizes", [["--runs", "0"], ["--new-tokens", "0"], ["--warmup", "-1"]])
def test_every_single_stream_job_refuses_empty_sizes(module: str, sizes: list[str]) -> None:
    """Checked before anything loads: a job with nothing to time would report a row without a number."""
    done = subprocess.run([sys.executable, "-m", module, "--model", "unused", *sizes],
                          capture_output=True, text=True, timeout=120, cwd=REPO, check=False)
    assert done.returncode == 2, done.stderr
    assert "--prompt-tokens, --new-tokens and --runs must be >= 1, --warmup >= 0" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("module", "threads"), [("vinolm.bench.peers.optimum_peer", []),
                                                ("vinolm.bench.peers.torch_peer", []),
                                                ("vinolm.bench.peers.torch_peer", ["--threads", "0"])])
def test_the_transformers_peers_run_with_the_bench_defaults(module: str, threads: list[str], tmp_path: Path) -> None:
    """As ``vinolm bench --peers`` starts them (no --threads: the library's default), they get
    past their checks to the model: a --threads check meant for llama.cpp once made both rows
    an argparse error."""
    done = subprocess.run([sys.executable, "-m", module, "--model", str(tmp_path / "missing"), "--runs", "1",
                           "--new-tokens", "2", "--prompt-tokens", "8", *threads],
                          capture_output=True, text=True, timeout=300, cwd=REPO, check=False)
    assert done.returncode == 1 and "error:" not in done.stderr, done.stderr
    assert parse_line(done.stdout)["error"], done.stdout


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.parametrize(("sleep", "timeout", "outcome"), [(120, 2.0, "timed out after 2 s"), (0, 60.0, "exit 0")])
def test_nothing_a_job_started_outlives_it(tmp_path: Path, sleep: int, timeout: float, outcome: str) -> None:
    """A server a bench job starts must not keep taking CPU from the rows after it, whether the
    job times out (and is killed before it can stop its children) or forgets them."""
    from vinolm.bench.runner import Job, run_job

    pid_file = tmp_path / "child.pid"
    script = ("import subprocess, sys, time; child = subprocess.Popen([sys.executable, '-c', 'import time; "
              f"time.sleep(300)'], stdout=subprocess.DEVNULL); open({str(pid_file)!r}, 'w').write(str(child.pid)); "
              f"time.sleep({sleep})")
    line = run_job(Job("leaves a child", "single", [sys.executable, "-c", script]), timeout, log=lambda _: None)
    assert line["error"].startswith(outcome)
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child)


def test_report_ratios_against_llama_cpp() -> None:
    rows = [_row("vinolm genai", 120.0, 2000.0), _row("llama.cpp", 100.0, 500.0, peer="llama.cpp"),
            {"label": "pytorch", "section": "single", "skipped": "torch is not installed"}]  # fmt: skip
    table = report.single_table(rows)
    assert "1.20x" in table and "4.00x" in table
    assert "skipped: torch is not installed" in table
    assert "1.20x / 4.00x" in report.ratio_table(rows)
    assert "at its fastest" not in report.ratio_table(rows)  # one llama.cpp row: nothing to pick


def test_report_ratios_against_llama_cpp_at_its_fastest() -> None:
    """Decode and prefill each against the llama.cpp row fastest at it, named."""
    rows = [_row("vinolm genai", 120.0, 2000.0), _row("llama-bench", 100.0, 200.0, peer="llama-bench"),
            _row("llama-bench Q4_0 (requantized)", 150.0, 400.0, peer="llama-bench (requantized)"),
            _row("llama-bench F16 (requantized)", 50.0, 500.0, peer="llama-bench (requantized)")]  # fmt: skip
    table = report.ratio_table(rows)
    assert "| llama.cpp at its fastest |" in table.splitlines()[0]
    assert table.splitlines()[2].endswith(
        "| 0.80x (llama-bench Q4_0 (requantized)) / 4.00x (llama-bench F16 (requantized)) |")


def test_markdown_has_every_section() -> None:
    results = {
        "started": "now", "command": "vinolm bench", "model_ir": "/m", "model_gguf": None,
        "config": BenchConfig().__dict__,
        "machine": {"cpu": "cpu", "cpu_count": 2, "memory_gb": 24, "isa": ["amx_tile"]},
        "results": [
            _row("vinolm genai", 120.0, 2000.0),
            {"label": "vinolm serve (openai)", "section": "throughput", "peer": "vinolm serve (openai)",
             "levels": [level_record(1, [round_record(1.0, 64, [0.1])]), level_record(8, [round_record(1.0, 256, [0.2])])]},
        ],
    }  # fmt: skip
    text = report.markdown(results)
    assert "## Single stream" in text and "## Throughput vs concurrency" in text
    assert "4.00x" in text  # c=8 over c=1


@pytest.mark.slow
def test_tiny_bench_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    cmd = [sys.executable, "-m", "vinolm.cli", "bench", "--engine", "genai", "--peer", "genai-direct",
           "--prompt-tokens", "16", "--new-tokens", "4", "--runs", "1", "--warmup", "0", "--repeat", "2",
           "--concurrency", "1,2", "--timeout", "900", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| vinolm genai |" in proc.stdout
    for name in ("bench.md", "bench.json", "ttft.png", "tpot.png", "throughput.png"):
        assert (out / name).stat().st_size > 0, name
    data = json.loads((out / "bench.json").read_text())
    assert {"config", "machine", "results", "model_ir"} <= set(data)
    by_label = {r["label"]: r for r in data["results"]}
    for label in ("vinolm genai", "genai-direct"):
        row = by_label[label]
        assert "error" not in row, row.get("error")
        assert {"version", "load_s", "runs", "stats", "peak_rss_mb"} <= set(row)
        assert len(row["runs"]) == 2 and row["repeats"] == 2  # one run from each round
        run = row["runs"][0]
        assert run["new_tokens"] == 4
        assert {"ttft_s", "prefill_tps", "decode_tps", "tpot_s"} <= set(run)
    compiled = by_label["vinolm genai"]["properties"]  # what vinolm's row ran with, not only what was asked
    assert "KV_CACHE_PRECISION" in compiled and "CACHE_DIR" not in compiled
    for label in ("vinolm genai in-process", "vinolm serve (openai)"):
        row = by_label[label]
        assert "error" not in row, row.get("error")
        assert [lv["concurrency"] for lv in row["levels"]] == [1, 2]
        assert all(lv["aggregate_tps_median"] for lv in row["levels"])


@pytest.mark.slow
def test_interleave_runs_every_kind_of_row() -> None:
    from vinolm.engines.ovconfig import cap_properties

    rows = ["direct", "direct-stream", "genai", "native@INFERENCE_PRECISION_HINT=f32"]
    cmd = [sys.executable, "-m", "vinolm.bench.interleave", *[a for r in rows for a in ("--row", r)],
           "--prompt-tokens", "32", "--new-tokens", "4", "--runs", "1", "--json"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])["rows"]
    assert list(result) == rows
    assert all(row["tpot_ms"] > 0 and row["ttft_ms"] > 0 for row in result.values())
    assert result["direct"]["tpot_vs_first"] == 1.0
    # a direct row keeps no answer, so nothing is compared with one (the first row here)
    assert all(row["same_answers"] is None for row in result.values())
    assert result["direct"]["properties"]["KV_CACHE_PRECISION"] == "f16"  # vinolm's defaults
    assert result[rows[-1]]["properties"] == {"CACHE_DIR": result[rows[-1]]["properties"]["CACHE_DIR"],
                                             **cap_properties(),  # what an ISA cap needs (none without one)
                                             "INFERENCE_PRECISION_HINT": "f32"}  # exactly what the row says


@pytest.mark.slow
def test_interleave_copy_task_compares_speculative_rows_with_plain() -> None:
    from vinolm.models import prepare

    draft = str(prepare(None, "int4", progress=lambda _: None).path)  # the INT4 export drafts for the INT8 one
    exact = "@INFERENCE_PRECISION_HINT=f32,KV_CACHE_PRECISION=f32,DYNAMIC_QUANTIZATION_GROUP_SIZE=0"
    rows = [f"genai{exact}", f"genai-lookup{exact}", f"genai-draft{exact}", f"native{exact}",
            f"native-lookup{exact}", f"genai-lookup/2{exact}", f"native-lookup/4/5{exact}"]
    cmd = [sys.executable, "-m", "vinolm.bench.interleave", *[a for r in rows for a in ("--row", r)],
           "--task", "copy", "--weight-format", "int8", "--prompt-tokens", "200", "--new-tokens", "24",
           "--runs", "1", "--num-assistant-tokens", "8", "--draft-model", draft, "--json"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["task"] == "copy" and result["prompt_tokens"] > 150
    assert result["lookup"] == {"num_assistant_tokens": 8, "max_ngram_size": 6} and result["draft_model"] == draft
    assert all(row["same_answers"] and row["decode_tps"] > 0 for row in result["rows"].values())
    for row in result["rows"].values():  # each run's speed-up over the row it answers like
        low, mid, high = row["speedup_per_run"]
        assert 0 < low <= mid <= high
    from vinolm.bench.interleave import markdown

    lookup = result["rows"][f"genai-lookup{exact}"]["speedup_per_run"]
    assert f"| {lookup[1]:.2f}x ({lookup[0]:.2f}-{lookup[2]:.2f}) |" in markdown(result)
    answers = [run[2] for row in result["rows"].values() for run in row["runs"]]
    assert answers[0] and answers[0] == answers[1] == answers[2]
    assert answers[3] and answers[3] == answers[4]  # and the native engine its own
    assert answers[5] == answers[0]  # two proposed tokens a step, compared with the same plain twin
    assert answers[6] == answers[3]  # and n-grams up to 5
    # The n-th run asks the same text whatever the rows (the warm-ups took one text per row).
    alone = subprocess.run([sys.executable, "-m", "vinolm.bench.interleave", "--row", f"native{exact}", "--task", "copy",
                            "--weight-format", "int8", "--prompt-tokens", "200", "--new-tokens", "24", "--runs", "1",
                            "--json"], capture_output=True, text=True, timeout=900, cwd=REPO, check=False)
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert json.loads(alone.stdout.splitlines()[-1])["rows"][f"native{exact}"]["runs"][0][2] == answers[3]
    for args, error in ((["--row", "direct", "--task", "story"], "the direct rows take --task filler"),
                        (["--row", "genai-draft"], "genai-draft rows and --draft-model go together"),
                        (["--row", "genai", "--row", "native", "--row", "genai"], "--row 'genai' is given twice")):
        refused = subprocess.run([sys.executable, "-m", "vinolm.bench.interleave", *args],
                                 capture_output=True, text=True, timeout=120, cwd=REPO, check=False)
        assert refused.returncode == 2 and error in refused.stderr
    # A row with a property OpenVINO does not have: one line, exit 2 as for the vinolm command.
    unloadable = subprocess.run([sys.executable, "-m", "vinolm.bench.interleave", "--row", "genai@NO_SUCH_PROPERTY=1",
                                 "--runs", "1", "--prompt-tokens", "16", "--new-tokens", "2"],
                                capture_output=True, text=True, timeout=300, cwd=REPO, check=False)
    assert unloadable.returncode == 2 and "Traceback" not in unloadable.stderr
    assert unloadable.stderr.startswith("python -m vinolm.bench.interleave: error: OpenVINO's CPU plugin has no "
                                        "property NO_SUCH_PROPERTY")


@pytest.mark.slow
def test_burst_compares_both_scheduler_modes() -> None:
    cmd = [sys.executable, "-m", "vinolm.bench.burst", "--requests", "3", "--prompt-tokens", "8",
           "--new-tokens", "3", "--bursts", "1", "--json"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    modes = json.loads(proc.stdout.splitlines()[-1])["modes"]
    assert list(modes) == ["yield", "no-yield"]
    for mode in modes.values():
        assert len(mode["bursts"]) == 1
        assert 0 < mode["last_first_token_s"] <= mode["last_end_s"]


def test_a_row_names_its_kind_model_and_exact_properties() -> None:
    from vinolm.bench.interleave import parse_row

    row = parse_row("genai:/tmp/x/int4-sym@KV_CACHE_PRECISION=u8,DYNAMIC_QUANTIZATION_GROUP_SIZE=0")
    assert (row.kind, row.model) == ("genai", "/tmp/x/int4-sym")
    assert row.properties == {"KV_CACHE_PRECISION": "u8", "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0}
    assert parse_row("direct@").properties == {}  # OpenVINO's defaults, not vinolm's
    assert parse_row("native") == type(row)("native", None, None)
    assert parse_row("genai-lookup/3:/x/int4@").proposed == 3  # the row's own tokens per step
    both = parse_row("native-lookup/3/6")  # and the longest n-gram it matches
    assert (both.kind, both.proposed, both.ngram) == ("native-lookup", 3, 6)
    assert parse_row("genai-draft/4").proposed == 4 and parse_row("genai-lookup").ngram is None
    for bad in ("genai:", "llama:/x", "gen@A=1", "genai/3", "native-lookup/0", "genai-lookup/x", "genai-lookup/3/0",
                "genai-lookup/3/6/2", "genai-draft/3/6", "native/3/6", "genai-lookup/65", "direct:/nonexistent.gguf"):
        with pytest.raises(InvalidRequest, match=f"--row {bad!r}: "):
            parse_row(bad)


@pytest.mark.slow
def test_interleave_compares_another_export_in_the_same_process() -> None:
    from vinolm.models import locate_source, prepare

    folder = prepare(None, "int8", progress=lambda _: None).path
    gguf = locate_source("smollm2-135m").location  # the packaged GGUF, read by openvino-genai itself
    rows = ["genai", f"genai:{folder}", f"direct:{gguf}"]
    cmd = [sys.executable, "-m", "vinolm.bench.interleave", *[a for r in rows for a in ("--row", r)],
           "--weight-format", "int4", "--prompt-tokens", "32", "--new-tokens", "4", "--runs", "1", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["model"].endswith("int4") and list(result["rows"]) == rows
    assert all(row["decode_tps"] > 0 for row in result["rows"].values())


def test_common_prefix_counts_equal_leading_tokens() -> None:
    from vinolm.bench.agreement import common_prefix

    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix([1, 2], [1, 2, 3]) == 2
    assert common_prefix([5], [6]) == 0


@pytest.mark.slow
def test_agreement_of_a_configuration_with_itself_is_total() -> None:
    row = "native@INFERENCE_PRECISION_HINT=f32"
    cmd = [sys.executable, "-m", "vinolm.bench.agreement", "--row", row, "--row", row, "--row", "genai",
           "--new-tokens", "3", "--text-tokens", "64", "--json"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    reference, again, genai = result["rows"]
    assert result["reference"] == row and [r["row"] for r in result["rows"]] == [row, row, "genai"]
    assert reference["identical"] == again["identical"] == 20  # a second load answers the same
    assert genai["prompts"] == 20 and all(0 <= n <= 3 for n in genai["tokens_equal"])
    # Teacher-forced scores: a configuration is its own reference; another one's are close, not equal.
    assert again["top1_same"] == 1.0 and abs(again["kl_divergence"]) < 1e-6
    assert again["perplexity"] == reference["perplexity"] > 1
    assert 0.5 < genai["top1_same"] <= 1 and genai["kl_divergence"] >= 0 and genai["perplexity"] > 1


def test_agreement_scores_llama_cpp_on_the_same_tokens() -> None:
    from vinolm.bench.runner import peers_python
    from vinolm.models import locate_source

    shipped = locate_source("smollm2-135m").location
    for args, said in ((["--row", f"llama.cpp:{shipped}", "--row", "genai", "--text-tokens", "8"], "the reference"),
                       (["--row", "genai", "--row", f"llama.cpp:{shipped}"], "add --text-tokens"),
                       (["--row", "genai", "--row", "llama.cpp:/nowhere/m.gguf", "--text-tokens", "8"], "no such GGUF")):
        refused = subprocess.run([sys.executable, "-m", "vinolm.bench.agreement", *args], capture_output=True,
                                 text=True, timeout=120, cwd=REPO, check=False)
        assert refused.returncode == 2 and said in refused.stderr and "Traceback" not in refused.stderr
    has_llama = subprocess.run([peers_python(), "-c", "import llama_cpp"], capture_output=True, check=False)
    if has_llama.returncode:
        pytest.skip("llama-cpp-python is not installed (make peers)")
    cmd = [sys.executable, "-m", "vinolm.bench.agreement", "--row", "genai", "--row", f"llama.cpp:{shipped}",
           "--new-tokens", "2", "--text-tokens", "64", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    _, llama = result["rows"]
    # The GGUF vinolm's INT8 was made from: the same model on the same ids, near but not at it.
    assert llama["identical"] is None and 0.7 < llama["top1_same"] < 1 and 0 < llama["kl_divergence"] < 0.1
    assert llama["perplexity"] > 1
    from vinolm.bench.agreement import markdown

    assert f"| `llama.cpp:{shipped}` | – | – | – |" in markdown(result)


@pytest.mark.slow
def test_profile_breaks_a_decode_step_down_by_node_type() -> None:
    cmd = [sys.executable, "-m", "vinolm.bench.profile", "--prompt-tokens", "16", "--steps", "3", "--step-tokens", "2",
           "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["step_tokens"] == 2 and result["machine"]["cpu_count"] == os.cpu_count()  # what it ran on
    types = {r["node_type"]: r for r in result["rows"]}
    weights = [r for name, r in types.items() if name.startswith("FullyConnected")]
    assert weights and all(r["kernels"] for r in weights), types
    assert abs(sum(r["share"] for r in result["rows"]) - 1) < 0.01
    # Per step, not summed over the run or averaged with the prefill: the nodes fit in the step.
    assert 0 < result["counted_ms"] <= result["step_ms"] * 1.2 and result["weight_gbps"] > 0
    # Per weight matrix, every layer's as one row, each matmul of the step in one of them.
    matmuls = result["matmuls"]
    assert sum(m["nodes"] for m in matmuls) == sum(r["nodes"] for r in weights), matmuls
    assert all(".N." in m["matmul"] or m["nodes"] == 1 for m in matmuls), matmuls
    assert all(m["us_per_call"] > 0 and m["gbps"] > 0 and m["gweights_per_s"] > 0 for m in matmuls), matmuls
    lm_head = next(m for m in matmuls if m["matmul"] == "lm_head")
    rows, columns = map(int, lm_head["matrix"].split()[0].split("x"))
    assert rows * columns > 0 and lm_head["matrix"].split()[1] in {"i8", "u8", "i4", "u4", "f16", "f32"}, lm_head
    # The 2-token pass against 2 single steps: a difference per row, and a verdict.
    parity = result["parity"]
    assert len(parity["max_abs_diff"]) == 2 and all(d >= 0 for d in parity["max_abs_diff"])
    assert parity["bitwise"] == (max(parity["max_abs_diff"]) == 0)
    # What surrounds a pass in the native engine's prompt lookup, the kept-tokens control included.
    miss = result["miss"]
    assert set(miss) == {"step_ms", "pass_ms", "pass_after_pass_ms", "step_after_kept_ms", "reject_ms",
                         "step_after_masked_ms", "cut_ms", "step_after_cut_ms"}, miss
    assert min(miss.values()) >= 0 and miss["step_ms"] > 0 and miss["pass_ms"] > 0
    refused = subprocess.run([sys.executable, "-m", "vinolm.bench.profile", "--steps", "0"],
                             capture_output=True, text=True, timeout=120, cwd=REPO, check=False)
    assert refused.returncode == 2 and "--batch must be >= 1" in refused.stderr
    both = subprocess.run([sys.executable, "-m", "vinolm.bench.profile", "--batch", "4", "--step-tokens", "3"],
                          capture_output=True, text=True, timeout=120, cwd=REPO, check=False)
    assert both.returncode == 2 and "checking pass" in both.stderr and "Traceback" not in both.stderr
    # A property OpenVINO refuses: its one useful line, not a traceback of the compile.
    unknown = subprocess.run([sys.executable, "-m", "vinolm.bench.profile", "--steps", "1", "--ov-config",
                              "NO_SUCH_PROPERTY=1"], capture_output=True, text=True, timeout=300, cwd=REPO, check=False)
    assert unknown.returncode == 1 and unknown.stderr.startswith("python -m vinolm.bench.profile: error: OpenVINO: ")
    assert "NO_SUCH_PROPERTY" in unknown.stderr and len(unknown.stderr.splitlines()) == 1, unknown.stderr


@pytest.mark.slow
@pytest.mark.skipif(bool(missing_cpu_features()), reason="the q4_1 kernel needs AVX2, FMA and F16C")
def test_profile_counts_the_q4_1_kernels_operations_as_the_weight_matmuls() -> None:
    """OpenVINO runs vinolm's kernel as ``Reference`` nodes: their blobs are read back as the N x K matrices
    they hold, and the checking pass around it (the native engine's) loads the kernel too."""
    cmd = [sys.executable, "-m", "vinolm.bench.profile", "--weight-format", "q4_1", "--prompt-tokens", "16",
           "--steps", "2", "--step-tokens", "2", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    matmuls = {m["matmul"]: m for m in result["matmuls"]}
    assert matmuls["lm_head"]["matrix"] == "49152x576 Q8MatMul", matmuls
    if "layers.N.mlp" in matmuls:  # exported fused (q4_1's default on AVX2 alone): the MLP's three matrices
        assert matmuls["layers.N.mlp"]["matrix"] == "1536x576 + 1536x576 + 576x1536 Q4MLP", matmuls
        assert matmuls["layers.N.mlp"]["nodes"] == 30 and "layers.N.mlp.down_proj" not in matmuls, matmuls
        assert matmuls["layers.N.self_attn.o_proj"]["matrix"] == "576x576 Q4MatMulAdd", matmuls  # its residual's Add
    else:
        assert matmuls["layers.N.mlp.down_proj"]["matrix"] == "576x1536 Q4MatMul", matmuls
    reference = next(r for r in result["rows"] if r["node_type"] == "Reference")
    assert sum(m["nodes"] for m in matmuls.values()) == reference["nodes"] and result["weight_gbps"] > 0
    assert result["parity"]["bitwise"] and result["miss"]["pass_ms"] > 0  # the kernel's rows are a step's


@pytest.mark.slow
def test_profile_paged_times_the_model_as_openvino_genai_runs_it() -> None:
    """genai's checking pass runs another attention kernel than its steps: ``--paged`` times and
    compares that form of the model, not the stateful one the native engine runs."""
    cmd = [sys.executable, "-m", "vinolm.bench.profile", "--paged", "--prompt-tokens", "40", "--steps", "3",
           "--step-tokens", "3", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    types = {r["node_type"] for r in result["rows"]}
    assert result["paged"] and "PagedAttentionExtension" in types and not any("ScaledDot" in t for t in types), types
    assert any(t.startswith("FullyConnected") for t in types) and 0 < result["counted_ms"] <= result["step_ms"] * 1.2
    parity = result["parity"]  # each of the pass's rows against a step at its position
    assert len(parity["max_abs_diff"]) == 3 and parity["bitwise"] == (max(parity["max_abs_diff"]) == 0)
    assert max(parity["max_abs_diff"]) < 50 and result["miss"] is None  # logits of the same tokens; no native engine
    refused = subprocess.run([sys.executable, "-m", "vinolm.bench.profile", "--paged", "--batch", "4"],
                             capture_output=True, text=True, timeout=120, cwd=REPO, check=False)
    assert refused.returncode == 2 and "--paged times one sequence" in refused.stderr and "Traceback" not in refused.stderr


@pytest.mark.slow
def test_profile_decodes_a_batch_of_sequences_a_step() -> None:
    cmd = [sys.executable, "-m", "vinolm.bench.profile", "--prompt-tokens", "16", "--steps", "3", "--batch", "4"]
    proc = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=900, cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["batch"] == 4 and result["parity"] is None and result["miss"] is None
    assert 0 < result["counted_ms"] <= result["step_ms"] * 1.2
    assert any(r["node_type"].startswith("FullyConnected") for r in result["rows"])
    table = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO, check=False)
    assert table.returncode == 0 and "Decode step of 4 sequences:" in table.stdout, table.stderr[-2000:]


# -- what the numbers were measured on, and who answered ------------------------------------------
def test_isa_line_names_every_kind_of_cpu() -> None:
    avx2 = {"isa": ["AVX2"], "cpu_kind": "avx2", "openvino_capabilities": ["FP32", "INT8"]}
    assert report.isa_line(avx2) == "ISA: AVX2 (avx2; OpenVINO: FP32 INT8)"
    assert report.isa_line({"isa": []}) == "ISA: no AVX2"
    assert report.isa_line({"isa": ["amx_tile"]}) == "ISA: amx_tile"  # results written before the kinds


def test_machine_reports_this_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from vinolm.cpu import cpu_kind

    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    mach = report.machine()
    assert mach["cpu_kind"] == cpu_kind() and "FP32" in mach["openvino_capabilities"]
    if cpu_kind() != "other":
        assert "AVX2" in mach["isa"]
    assert report.isa_line(mach).startswith("ISA: ") and mach["cpu_kind"] in report.isa_line(mach)
    assert mach["isa_cap"] is None and "capped" not in report.isa_line(mach)
    # A run with OpenVINO's kernels capped to an older ISA says so beside every number.
    assert report.isa_line({**mach, "isa_cap": "AVX2"}).endswith("kernels capped at AVX2 by ONEDNN_MAX_CPU_ISA)")


@pytest.fixture()
def models_server() -> Iterator[Callable[[bytes], str]]:
    """A real HTTP server on loopback answering GET /v1/models with the body it is given."""
    import http.server
    import threading

    body = [b""]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/v1/models" else 404)
            self.end_headers()
            self.wfile.write(body[0])

        def log_message(self, *args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def serve(answer: bytes) -> str:
        body[0] = answer
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    server.shutdown()


def test_url_rows_are_named_after_the_server_measured(models_server: Callable[[bytes], str]) -> None:
    from vinolm.bench.runner import server_label, throughput_jobs

    url = models_server(b'{"data": [{"id": "smollm2.gguf", "owned_by": "llamacpp"}]}')
    assert server_label(url) == f"llamacpp smollm2.gguf at {url}"
    jobs = throughput_jobs(BenchConfig(url=url, levels=[1]), "/m", None)
    assert [job.label for job in jobs if job.meta.get("protocol")] == [f"llamacpp smollm2.gguf at {url} (openai)"]
    labelled = throughput_jobs(BenchConfig(url=url, url_label="llama-server -np 8", levels=[1]), "/m", None)
    assert [job.label for job in labelled if job.meta.get("protocol")] == ["llama-server -np 8 (openai)"]
    assert server_label(models_server(b'{"data": [{"id": "m", "owned_by": "vinolm"}]}')) == f"vinolm serve m at {url}"
    assert server_label(models_server(b"not json")) == f"server at {url}"
    assert server_label("http://127.0.0.1:9") == "server at http://127.0.0.1:9"  # nothing listens


@pytest.mark.slow
def test_server_bench_asks_chat_work_with_and_without_prompt_lookup() -> None:
    """The same passages in the same order to a plain server and a --prompt-lookup one: the
    rate counts what each generated, and the answers' digests say they answered alike (exact
    f32, where lookup must reproduce plain decoding; tests/integration/test_speculative.py)."""
    exact = [a for pair in ("INFERENCE_PRECISION_HINT=f32", "KV_CACHE_PRECISION=f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE=0")
             for a in ("--ov-config", pair)]  # fmt: skip
    cmd = [sys.executable, "-m", "vinolm.bench.server", "--task", "copy", "--prompt-tokens", "64", "--new-tokens", "12",
           "--concurrency", "1,2", "--rounds", "1", *exact]  # fmt: skip
    lines = []
    for extra in ([], ["--prompt-lookup"], ["--draft-model", "smollm2-135m"]):  # the model drafting for itself
        proc = subprocess.run([*cmd, *extra], capture_output=True, text=True, timeout=900, cwd=REPO, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        line = json.loads(proc.stdout.splitlines()[-1])
        assert "error" not in line, line.get("error")
        lines.append(line)
    plain, lookup, draft = lines
    assert plain["peer"] == "vinolm serve (openai, copy)" and lookup["peer"] == "vinolm serve --prompt-lookup (openai, copy)"
    assert draft["peer"] == "vinolm serve --draft-model smollm2-135m (openai, copy)"
    assert (plain["task"], plain["prompt_lookup"], lookup["prompt_lookup"]) == ("copy", False, True)
    assert (plain["draft_model"], draft["draft_model"]) == (None, "smollm2-135m")
    for one, other in zip(plain["levels"], lookup["levels"], strict=True):
        [a], [b] = one["rounds"], other["rounds"]
        assert 1 <= a["generated_tokens"] <= one["concurrency"] * 12 and a["aggregate_tps"] > 0
        assert len(a["answers_sha256"]) == len(b["answers_sha256"]) == 64
    # One stream is exact on every kind of CPU; a batch of two may split its sums otherwise
    # in a checking pass than in a step, so only the first level must match.
    for speculative in (lookup, draft):
        assert plain["levels"][0]["rounds"][0]["answers_sha256"] == speculative["levels"][0]["rounds"][0]["answers_sha256"]
    assert plain["levels"][0]["rounds"][0]["answers_sha256"] != plain["levels"][1]["rounds"][0]["answers_sha256"]


def test_server_bench_names_the_speculation_of_either_server() -> None:
    from vinolm.bench.server import label_of, llama_flash, llama_speculation, parse_args

    llama = parse_args(["--llama-server", "/m/Q8_0.gguf", "--draft-model", "/d/small.gguf", "--task", "story",
                        "--concurrency", "1,4"])  # fmt: skip
    assert label_of(llama) == "llama-server -np 4 -md small.gguf (openai, story)"
    assert llama_speculation(llama) == ["-md", "/d/small.gguf", "--spec-type", "draft-simple"]
    lookup = parse_args(["--llama-server", "/m/Q8_0.gguf", "--prompt-lookup", "--task", "copy", "--concurrency", "1"])
    assert label_of(lookup) == "llama-server -np 1 --spec-type ngram-simple (openai, copy)"
    assert llama_speculation(lookup) == ["--spec-type", "ngram-simple"]
    assert llama_speculation(parse_args(["--llama-server", "/m/Q8_0.gguf"])) == []
    off = parse_args(["--llama-server", "/m/Q8_0.gguf", "--llama-flash-attn", "off", "--concurrency", "8"])
    assert label_of(off) == "llama-server -np 8 -fa off (openai)" and llama_flash(off) == ["-fa", "off"]
    assert llama_flash(lookup) == []
    with pytest.raises(SystemExit):
        parse_args(["--llama-flash-attn", "off"])  # vinolm serve has no such flag
    assert label_of(parse_args(["--draft-model", "smollm2-135m"])) == "vinolm serve --draft-model smollm2-135m (openai)"
    for wrong in (["--draft-model", "d", "--url", "http://127.0.0.1:9"], ["--draft-model", "d", "--prompt-lookup"]):
        with pytest.raises(SystemExit):
            parse_args(wrong)


@pytest.mark.parametrize(("argv", "said"), [
    (["--concurrency", "abc"], "--concurrency takes levels like 1,4,8, got 'abc'"),
    (["--concurrency", "-1"], "--concurrency takes levels like 1,4,8"),
    (["--concurrency", "none"], "needs at least one level"),
    (["--rounds", "0"], "--rounds"),
    (["--new-tokens", "0"], "--new-tokens"),
    (["--llama-server", "m.gguf", "--threads", "0"], "--threads"),
])
def test_server_bench_refuses_sizes_it_cannot_measure(capsys: pytest.CaptureFixture[str], argv: list[str],
                                                      said: str) -> None:
    from vinolm.bench.server import parse_args

    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 2 and said in capsys.readouterr().err


def test_server_bench_starts_vinolm_serve_with_its_batching_settings() -> None:
    from vinolm.bench.server import batching_flags, label_of, parse_args

    args = parse_args(["--max-batched-tokens", "1024", "--kv-cache-gb", "2"])
    assert batching_flags(args) == ["--kv-cache-gb", "2", "--max-batched-tokens", "1024"]
    assert label_of(args) == "vinolm serve --kv-cache-gb 2 --max-batched-tokens 1024 (openai)"
    assert batching_flags(parse_args([])) == []
    for wrong in (["--max-batched-tokens", "512", "--url", "http://127.0.0.1:9"],
                  ["--kv-cache-gb", "0", "--llama-server", "/m/Q8_0.gguf"]):
        with pytest.raises(SystemExit):
            parse_args(wrong)


def test_llama_server_is_the_throughput_peer_once_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vinolm.bench.peers.llamacpp import LLAMA_BIN_ENV
    from vinolm.bench.runner import throughput_jobs

    cfg = BenchConfig(peers=["llama.cpp"], levels=[1, 4, 8], protocols=["openai"])
    monkeypatch.setenv(LLAMA_BIN_ENV, str(tmp_path))
    monkeypatch.setenv("VINOLM_HOME", str(tmp_path / "home"))
    jobs = {job.label: job for job in throughput_jobs(cfg, "/ir", "/m.gguf")}
    assert "make peers" in jobs["llama-server -np 8 (openai)"].meta["skip"]
    assert "--distinct-prompts" in jobs["llama-cpp-python server (serialises requests)"].command

    (tmp_path / "llama-server").write_text("")  # where make peers puts the program
    servers = {job.label: job for job in throughput_jobs(cfg, "/ir", "/m.gguf")}
    server = servers["llama-server -np 8 (openai)"]
    assert not server.meta.get("skip")
    assert "was not made" in servers["llama-server -np 8 Q4_0 (requantized) (openai)"].meta["skip"]
    assert server.command[server.command.index("--llama-server") + 1] == "/m.gguf"
    assert server.command[server.command.index("--concurrency") + 1] == "1,4,8"
    # The OpenVINO properties of the run reach the vinolm serve it starts, not the peer.
    capped = BenchConfig(levels=[1], protocols=["openai"], ov_config=["INFERENCE_PRECISION_HINT=f32"])
    vinolm_serve = {job.label: job for job in throughput_jobs(capped, "/ir", None)}["vinolm serve (openai)"]
    assert vinolm_serve.command[vinolm_serve.command.index("--ov-config") + 1] == "INFERENCE_PRECISION_HINT=f32"
    assert "--ov-config" not in server.command


def test_llama_server_alone_needs_no_llama_cpp_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vinolm.bench.peers.llamacpp import LLAMA_BIN_ENV
    from vinolm.bench.runner import single_jobs, throughput_jobs

    monkeypatch.setenv(LLAMA_BIN_ENV, str(tmp_path))
    (tmp_path / "llama-server").write_text("")
    cfg = BenchConfig(engines=["genai"], peers=["llama-bench", "llama-server"], levels=[8], protocols=["openai"])
    assert [job.label for job in single_jobs(cfg, "/ir", "/m.gguf")] == ["vinolm genai", "llama-bench"]
    assert [job.label for job in throughput_jobs(cfg, "/ir", "/m.gguf")] == [
        "vinolm genai in-process", "vinolm serve (openai)", "llama-server -np 8 (openai)",
        "llama-server -np 8 Q4_0 (requantized) (openai)"]


def test_throughput_ratio_prefers_llama_server_over_the_serialising_one() -> None:
    def row(label: str, peer: str | None, tps: float) -> dict[str, object]:
        return {"label": label, "section": "throughput", "peer": peer,
                "levels": [level_record(8, [round_record(1.0, int(tps), [0.1])])]}

    rows = [row("vinolm serve (openai)", None, 200.0), row("llama-cpp-python server", "llama-cpp-python", 25.0),
            row("llama-server -np 8 (openai)", "llama-server", 100.0)]
    table = report.throughput_table(rows)
    assert "| vinolm serve (openai) | 8 | 200.0 | – | 100 (100–100) | – | 2.00x |" in table
    assert "| llama-cpp-python server | 8 | 25.0 | – | 100 (100–100) | – | 0.25x |" in table
    # One llama-server row per -fa setting: vinolm is compared with the faster at each level.
    rows.append(row("llama-server -np 8 -fa off (openai)", "llama-server", 160.0))
    table = report.throughput_table(rows)
    assert "| vinolm serve (openai) | 8 | 200.0 | – | 100 (100–100) | – | 1.25x |" in table
    assert "| llama-server -np 8 -fa off (openai) | 8 | 160.0 | – | 100 (100–100) | – | – |" in table


def test_llama_server_rows_per_flash_attention_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vinolm.bench.peers.llamacpp import LLAMA_BIN_ENV
    from vinolm.bench.runner import throughput_jobs

    monkeypatch.setenv(LLAMA_BIN_ENV, str(tmp_path))
    (tmp_path / "llama-server").write_text("")
    cfg = BenchConfig(engines=[], peers=["llama-server"], levels=[8], llama_flash_attn=["auto", "off"])
    jobs = {job.label: job.command for job in throughput_jobs(cfg, "/ir", "/m.gguf")}
    assert list(jobs) == ["vinolm serve (openai)", "llama-server -np 8 -fa auto (openai)",
                          "llama-server -np 8 -fa off (openai)", "llama-server -np 8 Q4_0 (requantized) -fa auto (openai)",
                          "llama-server -np 8 Q4_0 (requantized) -fa off (openai)"]
    off = jobs["llama-server -np 8 -fa off (openai)"]
    assert off[off.index("--llama-flash-attn") + 1] == "off"
    assert "--llama-flash-attn" not in jobs["vinolm serve (openai)"]
    # A setting for a peer that is not asked for is refused, not ignored.
    alone = subprocess.run([sys.executable, "-m", "vinolm.cli", "bench", "--llama-flash-attn", "off", "--no-single"],
                           capture_output=True, text=True, timeout=120, cwd=REPO, check=False)
    assert alone.returncode == 2 and "add --peer llama-server" in alone.stderr and "Traceback" not in alone.stderr


def test_llama_bench_repetitions_become_runs_and_the_reference() -> None:
    from vinolm.bench.peers.llama_bench import runs_of

    runs = runs_of({"samples_ts": [500.0, 400.0]}, {"samples_ts": [100.0, 80.0], "n_gen": 128}, 990)
    assert [r["prefill_tps"] for r in runs] == [500.0, 400.0] and runs[1]["tpot_s"] == 1 / 80.0
    assert runs[0]["ttft_s"] == 990 / 500.0 and runs[0]["new_tokens"] == 128
    rows = [_row("vinolm genai", 120.0, 2000.0), _row("llama.cpp", 100.0, 500.0, peer="llama.cpp"),
            _row("llama-bench", 150.0, 1000.0, peer="llama-bench")]
    assert "| 0.80x | 2.00x |" in report.single_table(rows).splitlines()[2]  # against llama-bench


def test_llama_bench_keeps_the_faster_flash_attention_setting_by_median() -> None:
    from vinolm.bench.peers.llama_bench import fastest

    one_fast_run = {"flash_attn": 1, "samples_ts": [100.0, 10.0, 10.0]}  # mean 40, median 10
    steady = {"flash_attn": 0, "samples_ts": [30.0, 30.0, 30.0]}
    assert fastest([one_fast_run, steady]) is steady and fastest([steady, one_fast_run]) is steady


def test_llama_bench_also_measures_the_shipped_gguf_requantized(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vinolm.bench.peers.llamacpp import LLAMA_BIN_ENV
    from vinolm.bench.runner import REQUANTS, SERVER_REQUANTS, requant_jobs

    monkeypatch.setenv("VINOLM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(LLAMA_BIN_ENV, str(tmp_path))
    cfg = BenchConfig(engines=["genai"], peers=["llama-bench"])
    builds, measures = requant_jobs(cfg, "/models/m.Q4_1.gguf")
    assert len(builds) == 1 and "make peers" in builds[0].meta["skip"] and measures == []  # no quantizer
    (tmp_path / "llama-quantize").write_text("")
    builds, measures = requant_jobs(cfg, "/models/m.Q4_1.gguf")
    build = builds[0].command
    assert build[build.index("--gguf") + 1] == "/models/m.Q4_1.gguf"
    out = Path(build[build.index("--out") + 1])
    assert out == tmp_path / "home" / "bench" / "gguf" / "m.Q4_1"
    assert [job.label for job in measures] == [f"llama-bench {q} (requantized)" for q in REQUANTS] == [
        "llama-bench Q8_0 (requantized)", "llama-bench Q4_0 (requantized)", "llama-bench Q4_K_M (requantized)",
        "llama-bench F16 (requantized)"]
    assert measures[0].command[measures[0].command.index("--model") + 1] == str(out / "Q8_0.gguf")
    # Not the reference of the single-stream table (the shipped file's row is), but a column of the ratios.
    assert all(job.meta["peer"] not in report.SINGLE_PEERS for job in measures)
    # llama-server alone: only the format it also serves, and no single-stream rows.
    served, rows = requant_jobs(BenchConfig(peers=["llama-server"]), "/m.gguf")
    assert rows == [] and served[0].command[-2:] == ["--quant", "Q4_0"] == ["--quant", *SERVER_REQUANTS]
    # Nothing without a GGUF, or with llama-bench and no single-stream rows nor server levels.
    assert requant_jobs(cfg, None) == ([], [])
    assert requant_jobs(BenchConfig(peers=["llama-bench"], single=False), "/m.gguf") == ([], [])


def test_llama_quantize_requantizes_the_shipped_gguf(tmp_path: Path) -> None:
    from vinolm.bench.peers.llamacpp import llama_tool
    from vinolm.models import locate_source

    try:
        llama_tool("llama-quantize")
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    shipped = Path(locate_source("smollm2-135m").location)
    cmd = [sys.executable, "-m", "vinolm.bench.peers.llama_convert", "--gguf", str(shipped), "--out", str(tmp_path),
           "--quant", "Q8_0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    made = Path(json.loads(proc.stdout.splitlines()[-1])["Q8_0"])
    assert made.read_bytes()[:4] == b"GGUF" and made.stat().st_size > 1.4 * shipped.stat().st_size  # 8 bits, not 4
    assert [p.name for p in tmp_path.iterdir()] == ["Q8_0.gguf"]  # no temporary file left
    elsewhere = [*cmd[:4], str(tmp_path / "none.gguf"), "--out", str(tmp_path / "other"), *cmd[7:]]
    broken = subprocess.run(elsewhere, capture_output=True, text=True, timeout=300, cwd=REPO, check=False)
    assert broken.returncode == 1 and "none.gguf" in json.loads(broken.stdout.splitlines()[-1])["error"]
    assert "Traceback" not in broken.stderr
    for wrong, said in ((cmd[:7], "give at least one"), ([*cmd[:6], str(made), *cmd[7:]], "is a file, not a folder")):
        refused = subprocess.run(wrong, capture_output=True, text=True, timeout=60, cwd=REPO, check=False)
        assert refused.returncode == 2 and said in refused.stderr and "Traceback" not in refused.stderr
    # A quantizer that fails after it began writing (here: told the 4-bit file is a fresh f16 one,
    # it refuses to requantize at the first tensor) leaves nothing behind.
    from vinolm.bench.peers.llama_convert import requantized

    (tmp_path / "fresh").mkdir()
    with pytest.raises(RuntimeError, match="requantizing"):
        requantized(shipped, tmp_path / "fresh", ["Q8_0"], 2, fresh=True)
    assert not any((tmp_path / "fresh").iterdir())


def test_shapes_with_llama_bench_convert_quantize_and_measure_each_quant(tmp_path: Path) -> None:
    from vinolm.bench.runner import shape_jobs

    cfg = BenchConfig(peers=["llama-bench"], shape_names=["tiny-llama-1b-chat"], shape_formats=["int4"])
    builds, measures = shape_jobs(cfg)
    assert [job.label for job in builds] == ["build tiny-llama-1b-chat", "build tiny-llama-1b-chat GGUF"]
    convert = builds[1].command
    assert "vinolm.bench.peers.llama_convert" in convert and convert[convert.index("--pre-tokenizer") + 1] == "smollm"
    assert [job.label for job in measures] == ["tiny-llama-1b-chat int4", "tiny-llama-1b-chat llama.cpp Q4_0",
                                               "tiny-llama-1b-chat llama.cpp Q4_K_M", "tiny-llama-1b-chat llama.cpp Q8_0"]
    gguf = tmp_path / "Q4_0.gguf"
    gguf.write_bytes(b"\0" * 2_000_000)
    row = {**_row("x", 10.0, 100.0), "shape": "s", "format": "llama.cpp Q4_0", "model": str(gguf)}
    assert "| s | llama.cpp Q4_0 | 2 | – | 10.00 | 0.0 | 100 | – |" in report.shapes_table([row])
    row["stats"]["decode_tps"] = {"median": 500.0, "min": 500.0, "max": 500.0}
    assert "| 1.0 |" in report.shapes_table([row])  # 2 MB x 500 tok/s = 1.0 GB/s
    export = tmp_path / "int4"  # a vinolm export's row says the layout it was made with
    export.mkdir()
    (export / "vinolm.json").write_text(json.dumps({"weight_format": "int4", "sym": True, "group_size": 128,
                                                    "ratio": 0.8, "awq": False, "target_cpu": "avx2"}))
    row.update(format="int4", model=str(export))
    assert "| s | int4 sym g128 r0.8 (avx2) |" in report.shapes_table([row])
    # ... and the activation groups it was compiled with, where they are not vinolm's usual 64.
    row["properties"] = {"DYNAMIC_QUANTIZATION_GROUP_SIZE": 128}
    assert "| s | int4 sym g128 r0.8 (avx2), activation groups of 128 |" in report.shapes_table([row])
    row["properties"] = {"DYNAMIC_QUANTIZATION_GROUP_SIZE": 0}
    assert "(avx2), no activation quantization |" in report.shapes_table([row])
    row["properties"] = {"DYNAMIC_QUANTIZATION_GROUP_SIZE": 64}
    assert "| s | int4 sym g128 r0.8 (avx2) |" in report.shapes_table([row])
