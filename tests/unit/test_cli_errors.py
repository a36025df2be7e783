"""Bad input on the command line: one line naming the problem, exit code 2, no traceback,
no output folder left behind. These fail before any model is loaded, so they are fast."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vinolm.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err
    return code, err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("vinolm: error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_unknown_model_suggests_close_names(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(capsys, "generate", "hi", "--model", "phi2")
    assert_one_line_error(code, err, "phi2", "phi-2")


def test_missing_path(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = run(capsys, "generate", "hi", "--model", str(tmp_path / "nope"))
    assert_one_line_error(code, err, "no such file or folder")


def test_folder_that_is_not_a_model(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    code, err = run(capsys, "generate", "hi", "--model", str(tmp_path))
    assert_one_line_error(code, err, "holds no model")


def test_file_that_is_not_gguf(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\0" * 16)
    code, err = run(capsys, "export", str(path), "-o", str(tmp_path / "out"))
    assert_one_line_error(code, err, "not a .gguf")


def test_unsupported_architecture_leaves_no_output(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    src = tmp_path / "weird"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"model_type": "not_a_real_arch"}))
    out = tmp_path / "out"
    code, err = run(capsys, "export", str(src), "-o", str(out), "--weight-format", "int8")
    assert_one_line_error(code, err, "not_a_real_arch", "not supported")
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["weird"]


def test_remote_code_needs_flag(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    src = tmp_path / "custom"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"model_type": "chatglm", "auto_map": {"AutoModel": "x.Y"}}))
    code, err = run(capsys, "export", str(src), "-o", str(tmp_path / "out"))
    assert_one_line_error(code, err, "--trust-remote-code")


def test_awq_dataset_that_cannot_be_had_offline(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, err = run(capsys, "export", "smollm2-135m", "-o", str(out), "--weight-format", "int4",
                    "--awq", "--dataset", "wikitext2")
    assert_one_line_error(code, err, "wikitext2", "--dataset FILE")
    assert not out.exists()


def test_awq_without_dataset(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = run(capsys, "export", "smollm2-135m", "-o", str(tmp_path / "o"), "--weight-format", "int4", "--awq")
    assert_one_line_error(code, err, "--dataset")


def test_awq_calibration_file_missing(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = run(capsys, "export", "smollm2-135m", "-o", str(tmp_path / "o"), "--weight-format", "int4",
                    "--awq", "--dataset", str(tmp_path / "calib.txt"))
    assert_one_line_error(code, err, "calib.txt", "does not exist")


def test_unknown_device(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(capsys, "generate", "hi", "--device", "NPU7")
    assert_one_line_error(code, err, "NPU7", "CPU")


def test_unknown_engine(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(capsys, "generate", "hi", "--engine", "vllm")
    assert_one_line_error(code, err, "vllm", "genai")


@pytest.mark.parametrize(
    ("flag", "value", "needle"),
    [
        ("--max-new-tokens", "-1", "max_new_tokens"),
        ("--max-new-tokens", "0", "max_new_tokens"),
        ("--top-p", "1.5", "top_p"),
        ("--top-p", "0", "top_p"),
        ("--temperature", "-0.5", "temperature"),
        ("--top-k", "-3", "top_k"),
        ("--repetition-penalty", "0", "repetition_penalty"),
    ],
)
def test_invalid_numbers(capsys: pytest.CaptureFixture[str], flag: str, value: str, needle: str) -> None:
    code, err = run(capsys, "generate", "hi", flag, value)
    assert_one_line_error(code, err, needle)


def test_bad_ov_config(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(capsys, "generate", "hi", "--ov-config", "NO_EQUALS_SIGN")
    assert_one_line_error(code, err, "KEY=VALUE")


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["--engine", "foo"], ["--engine 'foo'", "unknown engine", "native-hybrid"]),
        (["--engine", "genai@KV_CACHE_PRECISION"], ["--engine 'genai@KV_CACHE_PRECISION'", "KEY=VALUE"]),
        (["--ov-config", "FOO"], ["--ov-config", "KEY=VALUE"]),
        (["--url", "http://127.0.0.1:1", "--protocol", "grpc"], ["gRPC address"]),
        (["--timeout", "0"], ["--timeout"]),
        (["--threads", "0"], ["--threads"]),
        (["--shape", "dolly-v2-3b"], ["--shape goes with --shapes"]),
        (["--shape-format", "int4"], ["--shape-format goes with --shapes"]),
        (["--url-label", "mine"], ["--url-label goes with --url"]),
        (["--url", "ftp://127.0.0.1:8000"], ["bad --url 'ftp://127.0.0.1:8000'", "http(s)://HOST"]),
        (["--no-single", "--concurrency", "none"], ["nothing to measure"]),
    ],
)
def test_bench_refuses_what_it_would_ignore_or_fail_on_per_row(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], needles: list[str]) -> None:
    """Refused before any job runs, not an error row per job under exit code 0."""
    code, err = run(capsys, "bench", *argv, "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, *needles)
    assert not (tmp_path / "out").exists()


def test_invalid_export_numbers(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = run(capsys, "export", "smollm2-135m", "-o", str(tmp_path / "o"), "--weight-format", "int4",
                    "--ratio", "1.5")
    assert_one_line_error(code, err, "ratio")
    code, err = run(capsys, "export", "smollm2-135m", "-o", str(tmp_path / "o"), "--weight-format", "int8",
                    "--group-size", "64")
    assert_one_line_error(code, err, "int4")


def test_real_process_prints_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "vinolm.cli", "generate", "hi", "--model", "definitely-not-a-model"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("vinolm: error: unknown model 'definitely-not-a-model'")


def test_chat_with_standard_input_closed_is_one_line() -> None:
    proc = subprocess.run([sys.executable, "-m", "vinolm.cli", "chat"], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60, check=False,
                          preexec_fn=lambda: os.close(0))
    assert proc.returncode == 2 and proc.stderr == "vinolm: error: vinolm chat reads your messages from " \
        "standard input, which is closed\n", proc.stderr


@pytest.mark.parametrize("record", ['{"catalog": "foo", "weight_format": "in', "[1, 2]"])
def test_ls_and_rm_survive_a_damaged_record(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch, record: str) -> None:
    folder = tmp_path / "models" / "foo" / "int8"
    folder.mkdir(parents=True)
    for name in ("openvino_model.xml", "openvino_model.bin", "openvino_tokenizer.xml", "openvino_detokenizer.xml"):
        (folder / name).write_text("x")
    (folder / "vinolm.json").write_text(record)
    monkeypatch.setenv("VINOLM_HOME", str(tmp_path))
    assert main(["ls"]) == 0 and "foo" in capsys.readouterr().out
    code, err = run(capsys, "rm", "foo", "--weight-format", "int4")
    assert_one_line_error(code, err, "'foo' is prepared as int8 only, not int4")
    assert main(["rm", "foo"]) == 0 and not folder.exists()


@pytest.mark.parametrize(("argv", "needle"), [
    (["generate", "hi", "--num-assistant-tokens", "3"], "--num-assistant-tokens tunes speculative decoding"),
    (["serve", "--max-ngram-size", "3"], "--max-ngram-size tunes speculative decoding"),
    (["generate", "hi", "--num-beams", "3", "--temperature", "0.5"], "beam search, which does not sample"),
    (["export", "smollm2-135m", "-o", "unused", "--dataset", "wikitext"], "calibrate AWQ: add --awq"),
    (["export", "smollm2-135m", "-o", "unused", "--num-samples", "5"], "calibrate AWQ: add --awq"),
    (["export", "smollm2-135m", "-o", "unused", "--weight-format", "q4_1", "--sym"], "not q4_1"),
    (["export", "smollm2-135m", "-o", "unused", "--weight-format", "q4_1", "--group-size", "64"], "int4 only"),
])
def test_flags_that_would_change_nothing_are_refused(capsys: pytest.CaptureFixture[str], argv: list[str],
                                                     needle: str) -> None:
    code, err = run(capsys, *argv)
    assert_one_line_error(code, err, needle)


@pytest.mark.slow
def test_a_property_openvino_does_not_have_is_the_users_mistake(capsys: pytest.CaptureFixture[str]) -> None:
    for engine in ("genai", "native"):
        code, err = run(capsys, "generate", "hi", "-n", "1", "--engine", engine, "--ov-config", "NO_SUCH_PROPERTY=1")
        assert_one_line_error(code, err, "OpenVINO's CPU plugin has no property NO_SUCH_PROPERTY")
